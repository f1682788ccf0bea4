"""Prompt formatting and answer extraction agree: the instruction names the place the parser reads."""

from __future__ import annotations

import pytest

from brorl.data import INSTRUCTIONS, Problem, extract_answer, format_prompt

PROBLEM = Problem(
    uid="t/0",
    source="t",
    category="custom",
    question="What is 2+2?",
    answer="4",
    solution=None,
    verifier="exact",
)


@pytest.mark.parametrize(
    ("completion", "fmt", "expected"),
    [
        ("so <answer>4</answer>", "answer_tag", "4"),  # plain tag
        ("<answer>3</answer> no wait <answer> 4 </answer>", "answer_tag", "4"),  # last tag wins, stripped
        ("<answer>\n12\n</answer>", "answer_tag", "12"),  # multi-line content
        ("<answer>4", "answer_tag", None),  # truncated: no closing tag
        ("<answer></answer>", "answer_tag", None),  # empty answer counts as none
        ("the answer is 4", "answer_tag", None),  # no tag at all
        ("\\boxed{4}", "boxed", "4"),
        ("\\boxed{\\frac{1}{2}} then \\boxed{3}", "boxed", "3"),  # last box wins
        ("\\boxed{\\frac{1}{2}}", "boxed", "\\frac{1}{2}"),  # nested braces balanced
        ("\\boxed{\\frac{1}{2}", "boxed", None),  # unbalanced (truncated)
        ("\\fbox{7}", "boxed", "7"),
        ("work\n\n 42 \n", "last_line", "42"),
        ("  anything  ", "raw", "anything"),
        ("", "raw", None),
    ],
)
def test_extract_answer_table(completion, fmt, expected):
    assert extract_answer(completion, fmt) == expected


def test_plain_prompt_contains_question_and_matching_instruction():
    for fmt, instruction in INSTRUCTIONS.items():
        text = format_prompt(PROBLEM, answer_format=fmt, template="plain")
        assert text.startswith("What is 2+2?\n") and instruction in text


def test_instruction_override_and_bare_string():
    assert format_prompt("Q?", template="plain", instruction="") == "Q?\n"


def test_auto_uses_chat_template_when_tokenizer_has_one(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    assert format_prompt(PROBLEM, tok) == format_prompt(PROBLEM, template="plain")  # no chat template: plain
    tok.chat_template = "{% for m in messages %}<user>{{ m['content'] }}{% endfor %}<assistant>"
    assert (
        format_prompt(PROBLEM, tok)
        == "<user>What is 2+2?\nPut your final answer inside <answer></answer>.<assistant>"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"template": "fancy"}, "unknown template"),
        ({"answer_format": "xml"}, "unknown answer_format"),
        ({"template": "chat"}, "needs a tokenizer with a chat_template"),
    ],
)
def test_bad_format_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        format_prompt(PROBLEM, **kwargs)


def test_extract_unknown_format_raises():
    with pytest.raises(ValueError, match="choose one of"):
        extract_answer("x", "xml")
