"""Prompt formatting and final-answer extraction: the two ends of one contract ("put your answer here").

Both live here, next to each other, so the instruction a prompt gives and the parser that reads the answer can
never drift apart; ``brorl.rewards`` re-exports :func:`extract_answer`. Formats (dispatch with plain dicts):

| answer_format | the prompt says | extraction |
|---|---|---|
| ``answer_tag`` | final answer inside ``<answer></answer>`` | the *last* closed ``<answer>…</answer>`` |
| ``boxed`` | put the final answer in ``\\boxed{}`` | content of the *last* brace-balanced ``\\boxed{…}`` |
| ``last_line`` | give the final answer on the last line | last non-empty line |
| ``raw`` | nothing | the whole completion, stripped |

Templates: ``plain`` ("{question}\\n{instruction}\\n"), ``chat`` (the tokenizer's chat template, one user
turn, generation prompt added), ``auto`` (``chat`` when the tokenizer has a chat template, else ``plain``).
"""

from __future__ import annotations

import re
from typing import Any

from brorl.data.problem import Problem

INSTRUCTIONS: dict[str, str] = {
    "answer_tag": "Put your final answer inside <answer></answer>.",
    "boxed": "Put your final answer within \\boxed{}.",
    "last_line": "Give your final answer on the last line.",
    "raw": "",
}

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _last_answer_tag(text: str) -> str | None:
    found = _ANSWER_TAG.findall(text)
    return found[-1] if found else None


def last_boxed(text: str) -> str | None:
    """Content of the last brace-balanced ``\\boxed{…}`` (or ``\\fbox{…}``); None if absent or unbalanced."""
    for match in reversed(list(_BOXED.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i]
    return None


def _last_line(text: str) -> str | None:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


EXTRACTORS: dict[str, Any] = {
    "answer_tag": _last_answer_tag,
    "boxed": last_boxed,
    "last_line": _last_line,
    "raw": lambda text: text,
}


def extract_answer(completion: str, answer_format: str) -> str | None:
    """The final answer a completion gives in ``answer_format``, stripped; None when there is none (or empty).

    Truncated answers (an ``<answer>`` with no closing tag, an unbalanced ``\\boxed{``) give None.
    """
    if answer_format not in EXTRACTORS:
        raise ValueError(f"unknown answer_format {answer_format!r}; choose one of {sorted(EXTRACTORS)}")
    found = EXTRACTORS[answer_format](completion)
    if found is None:
        return None
    found = found.strip()
    return found or None


def _plain(question: str, instruction: str, tokenizer: Any) -> str:
    return f"{question}\n{instruction}\n" if instruction else f"{question}\n"


def _chat(question: str, instruction: str, tokenizer: Any) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "template 'chat' needs a tokenizer with a chat_template; use template='plain' or 'auto'"
        )
    content = f"{question}\n{instruction}" if instruction else question
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


def _auto(question: str, instruction: str, tokenizer: Any) -> str:
    has_chat = tokenizer is not None and getattr(tokenizer, "chat_template", None)
    return (_chat if has_chat else _plain)(question, instruction, tokenizer)


TEMPLATES: dict[str, Any] = {"plain": _plain, "chat": _chat, "auto": _auto}


def format_prompt(
    problem: Problem | str,
    tokenizer: Any = None,
    *,
    template: str = "auto",
    answer_format: str = "answer_tag",
    instruction: str | None = None,
) -> str:
    """The prompt text for one problem (a :class:`Problem` or a bare question string).

    ``instruction`` overrides the answer-format instruction (``""`` drops it, saving context for tiny models).
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose one of {sorted(TEMPLATES)}")
    if answer_format not in INSTRUCTIONS:
        raise ValueError(f"unknown answer_format {answer_format!r}; choose one of {sorted(INSTRUCTIONS)}")
    question = problem.question if isinstance(problem, Problem) else str(problem)
    text = INSTRUCTIONS[answer_format] if instruction is None else instruction
    return TEMPLATES[template](question.strip(), text, tokenizer)
