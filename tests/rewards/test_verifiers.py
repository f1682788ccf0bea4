"""reasoning-gym, code and exact verifiers through score_answer: tables of (answer, expected) with reasons."""

from __future__ import annotations

import pytest

from brorl.data import Problem, TaskSpec, reasoning_gym_problems
from brorl.rewards import extract_code, run_code_tests, score_answer


def _first(task: str, config: dict | None = None) -> Problem:
    return reasoning_gym_problems([TaskSpec(task, config=config or {})], size=1, split="heldout", seed=11)[0]


@pytest.mark.parametrize(
    ("task", "config", "answer_of", "expected"),
    [
        ("basic_arithmetic", {"max_terms": 2, "max_digits": 1}, lambda p: p.answer, 1.0),  # gold scores 1
        ("basic_arithmetic", {"max_terms": 2, "max_digits": 1}, lambda p: "nonsense", 0.0),  # wrong
        ("gcd", {"max_value": 30}, lambda p: p.answer, 1.0),
        ("gcd", {"max_value": 30}, lambda p: str(int(p.answer) + 1), 0.0),  # off by one
        ("spell_backward", {"max_word_len": 4}, lambda p: p.answer, 1.0),
        ("spell_backward", {"max_word_len": 4}, lambda p: p.answer[::-1], 0.0),  # spelled forward
        ("letter_counting", {"min_words": 2, "max_words": 4}, lambda p: p.answer, 1.0),
        ("count_bits", {"max_n": 63}, lambda p: p.answer, 1.0),
        ("leg_counting", {"min_animals": 1, "max_animals": 2}, lambda p: p.answer, 1.0),
        ("simple_equations", {}, lambda p: p.answer, 1.0),  # algebra category
        ("word_sorting", {}, lambda p: p.answer, 1.0),  # algorithmic, list-valued answer
        ("word_sorting", {}, lambda p: "", 0.0),  # empty answer
    ],
)
def test_reasoning_gym_uses_the_tasks_own_scorer(task, config, answer_of, expected):
    problem = _first(task, config)
    reward, reason = score_answer(problem, answer_of(problem))
    assert reward == expected, reason
    assert reason == ("ok" if expected == 1.0 else "wrong_answer")


def test_reasoning_gym_partial_credit_is_reported_as_partial():
    # the base ProceduralDataset scorer gives len(gold)/len(answer) when the gold is contained in the answer
    problem = _first("spell_backward", {"max_word_len": 4})
    reward, reason = score_answer(problem, problem.answer + " xx")
    assert 0.0 < reward < 1.0 and reason == "partial"


def test_scorer_exception_becomes_error_verdict():
    broken = Problem(
        uid="b/0",
        source="gcd",
        category="arithmetic",
        question="q",
        answer="1",
        solution=None,
        verifier="reasoning_gym",
        metadata={"rg_task": "gcd", "rg_config": {"bogus_key": 1}},
    )
    reward, reason = score_answer(broken, "1")
    assert reward == 0.0 and reason.startswith("error: ValueError")


SQUARE = "def f(x):\n    return x * x\n"
ASSERTS = "assert f(2) == 4\nassert f(3) == 9\nassert f(-1) == 1\n"
ECHO_TESTS = [
    {"input": "3\n", "output": "6\n"},
    {"input": "5\n", "output": "10"},
    {"input": "0", "output": "0"},
]


@pytest.mark.parametrize(
    ("code", "tests", "passed", "total", "reason"),
    [
        (SQUARE, ASSERTS, 3, 3, "ok"),  # all asserts pass
        ("def f(x):\n    return x * 2\n", ASSERTS, 1, 3, "wrong_answer"),  # partial: only f(2) agrees
        ("def f(x):\n    return 0\n", ASSERTS, 0, 3, "wrong_answer"),  # wrong everywhere
        ("def f(x):\n    raise KeyError('no')\n", ASSERTS, 0, 3, "error"),  # exception in every call
        ("def f(x:\n    return x\n", ASSERTS, 0, 3, "error: SyntaxError"),  # syntax error
        ("import os\nos._exit(0)\n", ASSERTS, 0, 3, "error: exited before"),  # exits early to fake success
        ("print(int(input()) * 2)\n", ECHO_TESTS, 3, 3, "ok"),  # stdin/stdout, trailing newline ignored
        ("print(int(input()) + 3)\n", ECHO_TESTS, 1, 3, "wrong_answer"),  # partial: only 3 -> 6
        ("print(1/int(input()))\n", [{"input": "0", "output": "x"}], 0, 1, "error: exit 1"),  # crashes
        ("x = (\n", ECHO_TESTS, 0, 3, "error: exit 1"),  # syntax error in stdin/stdout mode
    ],
)
def test_code_table(code, tests, passed, total, reason):
    result = run_code_tests(code, tests, timeout_s=5.0)
    assert (result.passed, result.total) == (passed, total), result.reason
    assert result.reason.startswith(reason)
    assert result.reward == pytest.approx(passed / total)


def test_code_verifier_reads_last_fenced_block():
    text = (
        "first try\n```python\ndef f(x): return 0\n```\nfixed:\n```python\ndef f(x):\n    return x * x\n```"
    )
    assert extract_code(text) == SQUARE
    problem = Problem(
        uid="c/0",
        source="c",
        category="code",
        question="q",
        answer=None,
        solution=None,
        verifier="code",
        tests=ASSERTS,
    )
    assert score_answer(problem, text) == (1.0, "ok")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("42", 1.0), (" 42 ", 1.0), ("042", 0.0), ("4 2", 0.0)],  # strip only; no numeric normalisation
)
def test_exact_verifier(answer, expected):
    problem = Problem(
        uid="e/0", source="e", category="custom", question="q", answer="42", solution=None, verifier="exact"
    )
    assert score_answer(problem, answer)[0] == expected


@pytest.mark.parametrize(
    ("tests", "message"),
    [("assert (", "not valid Python"), ([], "non-empty list"), ([{"in": 1}], "non-empty list")],
)
def test_bad_tests_raise(tests, message):
    with pytest.raises(ValueError, match=message):
        run_code_tests("pass", tests)
