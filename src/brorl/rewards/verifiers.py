"""Verifiers: one function per ``Problem.verifier``, each mapping (problem, extracted answer) to (reward, reason).

| verifier | checks with | reward |
|---|---|---|
| ``math`` | ``math-verify`` (``1/2`` = ``0.5`` = ``\\frac{1}{2}``) | 1.0 or 0.0 |
| ``reasoning_gym`` | the task's own ``dataset.score_answer(answer, entry)`` | in [0, 1] (some tasks give partial credit) |
| ``code`` | the sandbox (:mod:`brorl.rewards.sandbox`) | fraction of tests passed |
| ``exact`` | string equality after stripping whitespace | 1.0 or 0.0 |

These are plain functions of plain data, so they run the same in-process and in pool workers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from brorl.data.gym import gym_dataset, gym_entry
from brorl.data.problem import Problem
from brorl.data.prompts import last_boxed
from brorl.rewards.sandbox import SandboxLimits, run_code_tests

# (reward, reason): reason is "ok" for a full reward, else a short word saying why not
Verdict = tuple[float, str]


@functools.lru_cache(maxsize=4096)  # parsed sympy objects are immutable; golds and common answers repeat
def _parse_math(text: str, bare: bool) -> list:
    """math-verify's parse; ``bare`` text (a box's content, a gold answer) is read as one LaTeX formula first,
    because without delimiters math-verify may read only a prefix (``2\\sqrt{2}`` as ``2``)."""
    from math_verify import parse

    parsed = parse(f"${text}$") if bare and "$" not in text else []
    return parsed or parse(text)


def verify_math(completion: str, gold: str) -> float:
    """1.0 when the completion's final answer equals ``gold`` mathematically (math-verify), else 0.0.

    The final answer is the content of the *last* ``\\boxed{}`` when there is one (several boxed answers: the
    last wins), else whatever math-verify extracts from the text. Unparsable input gives 0.0, never an error.
    """
    boxed = last_boxed(completion)
    if boxed is not None:
        return verify_math_answer(boxed, gold)
    target = _parse_math(completion, bare=False) or _parse_math(completion, bare=True)
    return _equal(target, gold)


def verify_math_answer(answer: str, gold: str) -> float:
    """Like :func:`verify_math` for an already extracted final answer, read as one formula (``\\dfrac{3}{4}``)."""
    return _equal(_parse_math(answer, bare=True), gold)


def _equal(target: list, gold: str) -> float:
    from math_verify import verify

    gold_parsed = _parse_math(gold, bare=True)
    if not target or not gold_parsed:
        return 0.0
    return 1.0 if verify(gold_parsed, target) else 0.0


def _math(problem: Problem, answer: str, code_timeout_s: float) -> Verdict:
    if problem.answer is None:
        raise ValueError(f"problem {problem.uid!r}: math verifier needs a gold answer")
    reward = verify_math_answer(answer, problem.answer)
    return reward, "ok" if reward == 1.0 else "wrong_answer"


def _reasoning_gym(problem: Problem, answer: str, code_timeout_s: float) -> Verdict:
    meta = problem.metadata
    if "rg_task" not in meta:
        raise ValueError(f"problem {problem.uid!r}: reasoning_gym verifier needs metadata['rg_task']")
    dataset = gym_dataset(meta["rg_task"], meta.get("rg_config", {}), meta.get("rg_seed", 0))
    reward = float(dataset.score_answer(answer, gym_entry(problem)))
    return reward, "ok" if reward >= 1.0 else ("partial" if reward > 0 else "wrong_answer")


_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The last fenced code block (```python ... ```), else the whole text."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


def _code(problem: Problem, answer: str, code_timeout_s: float) -> Verdict:
    result = run_code_tests(
        extract_code(answer), problem.tests, timeout_s=code_timeout_s, limits=SandboxLimits()
    )
    return result.reward, result.reason


def _exact(problem: Problem, answer: str, code_timeout_s: float) -> Verdict:
    ok = problem.answer is not None and answer.strip() == problem.answer.strip()
    return (1.0, "ok") if ok else (0.0, "wrong_answer")


VERIFY: dict[str, Callable[[Problem, str, float], Verdict]] = {
    "math": _math,
    "reasoning_gym": _reasoning_gym,
    "code": _code,
    "exact": _exact,
}


def score_answer(problem: Problem, answer: str, *, code_timeout_s: float = 5.0) -> Verdict:
    """(reward, reason) for one extracted answer; a verifier's exception becomes (0.0, "error: ...")."""
    if problem.verifier not in VERIFY:
        raise ValueError(f"unknown verifier {problem.verifier!r}; choose one of {sorted(VERIFY)}")
    try:
        return VERIFY[problem.verifier](problem, answer, code_timeout_s)
    except Exception as exc:  # a scorer bug on one odd answer must not stop the step
        return 0.0, f"error: {type(exc).__name__}: {str(exc)[:120]}"
