"""The scoring pool: de-duplication within groups, shaping, and survival of hanging or crashing verifiers."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from brorl.data import Problem
from brorl.rewards import RewardPool, score_answer


def _math(uid: str, gold: str) -> Problem:
    return Problem(
        uid=uid, source="m", category="math", question="q", answer=gold, solution=None, verifier="math"
    )


PROBLEMS = [_math("m/0", "0.5"), _math("m/1", "3")]
# B=2 prompts x N=4 completions, prompt-major
COMPLETIONS = [
    "<answer>1/2</answer>",
    "<answer>\\frac{1}{2}</answer>",
    "<answer>1/2</answer>",
    "no tag",
    "<answer>3</answer>",
    "<answer>4</answer>",
    "<answer>3</answer>",
    "<answer>3</answer>",
]


def hostile_score(problem: Problem, answer: str, *, code_timeout_s: float):
    """A verifier that misbehaves on request (module level so spawned workers can import it)."""
    if answer == "hang":
        time.sleep(3600)
    if answer == "crash":
        os._exit(3)
    if answer == "raise":
        raise RuntimeError("verifier bug")
    return score_answer(problem, answer, code_timeout_s=code_timeout_s)


def test_in_process_rewards_reasons_and_metrics():
    with RewardPool(workers=0) as pool:
        result = pool.score(PROBLEMS, COMPLETIONS, n=4)
    np.testing.assert_array_equal(result.rewards, [1, 1, 1, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(result.correct, result.rewards == 1)
    assert result.reasons[3] == "no_answer" and result.reasons[5] == "wrong_answer"
    assert result.metrics["reward/mean"] == pytest.approx(6 / 8)
    # distinct answers: {1/2, \frac{1}{2}} and {3, 4} -> 2 per group (equivalent spellings are still distinct)
    assert result.metrics["reward/distinct_answers_per_group"] == 2.0
    assert result.metrics["reward/no_answer_frac"] == pytest.approx(1 / 8)


def test_identical_answers_in_a_group_are_scored_once():
    calls: list[tuple[str, str]] = []

    def counting(problem, answer, *, code_timeout_s):
        calls.append((problem.uid, answer))
        return score_answer(problem, answer, code_timeout_s=code_timeout_s)

    completions = ["<answer>7</answer>"] * 500 + ["<answer>8</answer>"] * 12 + ["<answer>7</answer>"] * 512
    with RewardPool(workers=0, score_fn=counting) as pool:
        result = pool.score([_math("a", "7"), _math("b", "7")], completions, n=512)
    # group a has two distinct answers, group b one: the same answer in another group is scored again
    assert sorted(calls) == [("a", "7"), ("a", "8"), ("b", "7")]
    assert result.rewards.sum() == 500 + 512


@pytest.mark.parametrize(
    ("finish", "stop_penalty", "format_penalty", "expected"),
    [
        (["stop", "stop"], 0.0, 0.0, [1.0, 0.0]),  # no shaping
        (["length", "stop"], 0.5, 0.0, [0.5, 0.0]),  # truncated correct answer loses the stop penalty
        (["stop", "length"], 0.5, 0.2, [1.0, -0.7]),  # truncated and unformatted: both penalties
        (["stop", "stop"], 0.0, 0.2, [1.0, -0.2]),  # format penalty only when no answer was found
    ],
)
def test_shaping_penalties(finish, stop_penalty, format_penalty, expected):
    with RewardPool(stop_penalty=stop_penalty, format_penalty=format_penalty) as pool:
        result = pool.score([_math("a", "2")], ["<answer>2</answer>", "2"], n=2, finish_reasons=finish)
    np.testing.assert_allclose(result.rewards, expected)
    assert result.correct.tolist() == [True, False]  # shaping never changes correctness


@pytest.fixture(scope="module")
def hostile_pool():
    with RewardPool(workers=2, timeout_s=1.5, score_fn=hostile_score) as pool:
        yield pool


def test_workers_agree_with_in_process(hostile_pool):
    serial = RewardPool(workers=0).score(PROBLEMS, COMPLETIONS, n=4)
    parallel = hostile_pool.score(PROBLEMS, COMPLETIONS, n=4)
    np.testing.assert_array_equal(serial.rewards, parallel.rewards)
    assert serial.reasons == parallel.reasons


def test_hanging_crashing_and_raising_verifiers_score_zero_and_pool_goes_on(hostile_pool):
    completions = [
        "<answer>hang</answer>",
        "<answer>crash</answer>",
        "<answer>raise</answer>",
        "<answer>2</answer>",
    ]
    start = time.perf_counter()
    result = hostile_pool.score([_math("a", "2")], completions, n=4)
    assert time.perf_counter() - start < 1.5 + 8.0  # one timeout (parallel with the rest) plus respawn slack
    assert result.rewards.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert result.reasons[0] == "timeout"
    assert result.reasons[1].startswith("worker_died")
    assert result.reasons[2].startswith("worker_died")  # an exception outside score_answer's guard kills it
    assert result.metrics["reward/timeouts"] == 1.0 and result.metrics["reward/errors"] == 2.0
    # replaced workers keep scoring
    again = hostile_pool.score(PROBLEMS, COMPLETIONS, n=4)
    assert again.rewards.tolist() == [1, 1, 1, 0, 1, 0, 1, 1]
    assert hostile_pool.restarts >= 3


def test_hostile_code_in_a_worker_is_contained_and_pool_goes_on(hostile_pool):
    code = Problem(
        uid="c",
        source="c",
        category="code",
        question="q",
        answer=None,
        solution=None,
        verifier="code",
        tests="assert True\n",
    )
    programs = [
        "```python\nimport os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n```",
        "```python\nwhile True:\n    pass\n```",
        "```python\nx = 1\n```",
    ]
    result = hostile_pool.score([code], programs, n=3)
    # killing the parent fails (other uid) or kills the worker: either way 0 for that program and scoring goes on
    assert result.rewards[1] == 0.0 and result.rewards[2] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "call", "message"),
    [
        ({"workers": -1}, None, "workers must be >= 0"),
        ({"timeout_s": 0}, None, "timeouts must be > 0"),
        ({"answer_format": "xml"}, None, "unknown answer_format"),
        ({"stop_penalty": -1}, None, "penalties"),
        ({}, lambda p: p.score(PROBLEMS, COMPLETIONS[:5], n=4), "expected B\\*N"),
        ({}, lambda p: p.score(PROBLEMS, COMPLETIONS, n=4, finish_reasons=["stop"]), "finish_reasons"),
    ],
)
def test_bad_arguments_raise(kwargs, call, message):
    with pytest.raises(ValueError, match=message):
        pool = RewardPool(**kwargs)
        call(pool)
