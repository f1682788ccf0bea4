"""The scoring pool: score B prompts x N completions in worker processes with a per-answer timeout.

BRORL.md §7 point 5: at N = 512 one step yields tens of thousands of answers and one hanging checker can freeze
a run. So:

- Answers are extracted first (in the parent, cheap regexes); identical extracted answers *within a group* are
  scored once (at N = 512 most answers repeat) and the verdict is copied to every duplicate.
- Distinct answers go one at a time to worker processes that we own (not ``ProcessPoolExecutor``, which cannot
  kill one stuck task and breaks entirely when a worker dies). A worker that exceeds ``timeout_s`` on an answer
  is SIGKILLed together with any sandbox it started, and replaced; a worker that dies is replaced. Either way
  that answer gets reward 0 with reason ``"timeout"`` or ``"worker_died: ..."`` and scoring goes on.
- ``workers=0`` scores in-process: no start-up cost, good for tiny runs and tests, but **no timeouts** beyond
  math-verify's own alarm and the sandbox's per-run limit (a verifier that hangs in Python hangs the caller).

Optional shaping (ProRLv2): ``stop_penalty`` is subtracted from answers cut at the length limit
(``finish_reason == "length"``), ``format_penalty`` from completions with no extractable answer.
Metrics are in the ``reward/`` and ``perf/`` namespaces (docs/metrics.md).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from brorl.data.problem import Problem
from brorl.data.prompts import extract_answer
from brorl.rewards.sandbox import kill_sandboxes_of
from brorl.rewards.verifiers import Verdict, score_answer

ScoreFn = Callable[..., Verdict]


@dataclass
class ScoreResult:
    """Rewards for B*N completions, prompt-major (``.reshape(B, N)`` recovers the groups)."""

    rewards: np.ndarray
    """(B*N,) float32: verifier reward minus any shaping penalties."""
    correct: np.ndarray
    """(B*N,) bool: the verifier gave full reward (before shaping)."""
    reasons: list[str]
    """(B*N,) ``"ok"``, ``"wrong_answer"``, ``"partial"``, ``"no_answer"``, ``"timeout"``, ``"error: ..."``."""
    answers: list[str | None]
    """(B*N,) the extracted answers (None when none was found)."""
    metrics: dict[str, float] = field(default_factory=dict)


def _worker_main(conn: Connection, score_fn: ScoreFn, code_timeout_s: float) -> None:
    """Worker loop: warm the imports, say ready, then answer (task_id, problem, answer) messages."""
    import math_verify  # noqa: F401  (imported here so the first answer does not pay for it)
    import reasoning_gym  # noqa: F401

    conn.send(("ready", None, None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        task_id, problem, answer = message
        reward, reason = score_fn(problem, answer, code_timeout_s=code_timeout_s)
        conn.send((task_id, reward, reason))


class _Worker:
    """One worker process and the task it is running (if any)."""

    def __init__(self, ctx: Any, score_fn: ScoreFn, code_timeout_s: float) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, score_fn, code_timeout_s), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.task: int | None = None
        self.deadline = float("inf")

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        kill_sandboxes_of(self.process.pid)  # its sandboxed grandchildren are not in its process group
        self.conn.close()


class RewardPool:
    """Score completions against problems; see the module docstring. Use as a context manager or ``close()``."""

    def __init__(
        self,
        workers: int = 0,
        *,
        timeout_s: float = 10.0,
        answer_format: str = "answer_tag",
        code_timeout_s: float = 5.0,
        stop_penalty: float = 0.0,
        format_penalty: float = 0.0,
        start_method: str = "spawn",
        score_fn: ScoreFn = score_answer,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = score in-process), got {workers}")
        if not timeout_s > 0 or not code_timeout_s > 0:
            raise ValueError(
                f"timeouts must be > 0, got timeout_s={timeout_s}, code_timeout_s={code_timeout_s}"
            )
        if stop_penalty < 0 or format_penalty < 0:
            raise ValueError("penalties are amounts subtracted from the reward: give values >= 0")
        extract_answer("", answer_format)  # raises a clear error for an unknown format
        self.timeout_s, self.code_timeout_s = timeout_s, code_timeout_s
        self.answer_format = answer_format
        self.stop_penalty, self.format_penalty = stop_penalty, format_penalty
        self.score_fn = score_fn
        self.restarts = 0
        self._startup_failures = 0
        self._ctx = mp.get_context(start_method)
        self._workers = [self._spawn() for _ in range(workers)]

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.score_fn, self.code_timeout_s)

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (idle ones exit on a None message; busy ones are killed)."""
        for w in self._workers:
            try:
                if w.task is None:
                    w.conn.send(None)
                    w.process.join(timeout=2)
            except (BrokenPipeError, OSError):
                pass
            if w.process.is_alive():
                w.kill()
        self._workers = []

    def _task_timeout(self, problem: Problem) -> float:
        """Code runs one sandboxed process per I/O case, each with its own limit; allow for all of them."""
        if problem.verifier != "code":
            return self.timeout_s
        runs = len(problem.tests) if isinstance(problem.tests, list) else 1
        return self.timeout_s + runs * (self.code_timeout_s + 1.0)

    def score(
        self,
        problems: Sequence[Problem],
        completions: Sequence[str],
        n: int,
        finish_reasons: Sequence[str] | None = None,
    ) -> ScoreResult:
        """Score B*N completions (prompt-major: completion ``i`` answers ``problems[i // n]``).

        ``finish_reasons`` (B*N,), e.g. ``"stop"`` / ``"length"``, enables the stop-properly penalty.
        """
        start = time.perf_counter()
        B = len(problems)
        if n < 1 or len(completions) != B * n:
            raise ValueError(
                f"expected B*N = {B}*{n} = {B * n} completions (prompt-major), got {len(completions)}"
            )
        if finish_reasons is not None and len(finish_reasons) != len(completions):
            raise ValueError(f"finish_reasons has {len(finish_reasons)} entries; expected {len(completions)}")
        answers = [self._extract(problems[i // n], c) for i, c in enumerate(completions)]
        keys: dict[tuple[int, str], int] = {}  # (group, answer) -> distinct task id
        tasks: list[tuple[Problem, str]] = []
        for i, answer in enumerate(answers):
            if answer is not None and (i // n, answer) not in keys:
                keys[(i // n, answer)] = len(tasks)
                tasks.append((problems[i // n], answer))
        verdicts = self._run(tasks)
        return self._assemble(answers, keys, verdicts, n, finish_reasons, start)

    def _extract(self, problem: Problem, completion: str) -> str | None:
        answer = extract_answer(completion, self.answer_format)
        if problem.verifier == "code" and answer is None:
            return completion  # code is usually written in fenced blocks, not in the answer slot
        return answer

    def _assemble(
        self,
        answers: list[str | None],
        keys: dict[tuple[int, str], int],
        verdicts: list[Verdict],
        n: int,
        finish_reasons: Sequence[str] | None,
        start: float,
    ) -> ScoreResult:
        total = len(answers)
        rewards = np.zeros(total, dtype=np.float32)  # (B*N,)
        correct = np.zeros(total, dtype=bool)  # (B*N,)
        reasons: list[str] = []
        for i, answer in enumerate(answers):
            reward, reason = (0.0, "no_answer") if answer is None else verdicts[keys[(i // n, answer)]]
            correct[i] = reward >= 1.0
            if answer is None:
                reward -= self.format_penalty
            if finish_reasons is not None and finish_reasons[i] == "length":
                reward -= self.stop_penalty
            rewards[i] = reward
            reasons.append(reason)
        seconds = time.perf_counter() - start
        groups = max(total // n, 1)
        metrics = {
            "reward/mean": float(rewards.mean()) if total else 0.0,
            "reward/correct_frac": float(correct.mean()) if total else 0.0,
            "reward/no_answer_frac": sum(a is None for a in answers) / max(total, 1),
            "reward/truncated_frac": (
                sum(f == "length" for f in finish_reasons) / max(total, 1)
                if finish_reasons is not None
                else 0.0
            ),
            "reward/distinct_answers_per_group": len(keys) / groups,
            "reward/scored_frac": len(keys) / max(total, 1),
            "reward/timeouts": float(sum(r == "timeout" for _, r in verdicts)),
            "reward/errors": float(sum(r.startswith(("error", "worker_died")) for _, r in verdicts)),
            "reward/worker_restarts": float(self.restarts),
            "perf/scoring_seconds": seconds,
            "perf/answers_per_second": total / seconds if seconds > 0 else 0.0,
        }
        return ScoreResult(rewards, correct, reasons, answers, metrics)

    def _run(self, tasks: list[tuple[Problem, str]]) -> list[Verdict]:
        if not self._workers:
            return [self.score_fn(p, a, code_timeout_s=self.code_timeout_s) for p, a in tasks]
        verdicts: list[Verdict | None] = [None] * len(tasks)
        queue = list(range(len(tasks)))[::-1]  # pop() from the end takes tasks in order
        while queue or any(w.task is not None for w in self._workers):
            self._dispatch(queue, tasks)
            self._collect(queue, verdicts)
            self._expire(verdicts)
        return [v if v is not None else (0.0, "error: lost") for v in verdicts]

    def _dispatch(self, queue: list[int], tasks: list[tuple[Problem, str]]) -> None:
        for k, w in enumerate(self._workers):
            if not (w.ready and w.task is None and queue):
                continue
            task_id = queue.pop()
            try:
                w.conn.send((task_id, *tasks[task_id]))
            except (BrokenPipeError, OSError):  # died while idle: replace it, retry the task elsewhere
                queue.append(task_id)
                self._replace(k)
                continue
            w.task, w.deadline = task_id, time.monotonic() + self._task_timeout(tasks[task_id][0])

    def _collect(self, queue: list[int], verdicts: list[Verdict | None]) -> None:
        deadlines = [w.deadline for w in self._workers if w.task is not None]
        wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 1.0
        by_conn = {w.conn: k for k, w in enumerate(self._workers)}
        for conn in wait(list(by_conn), timeout=min(wait_s, 1.0)):
            k = by_conn[conn]
            w = self._workers[k]
            try:
                task_id, reward, reason = conn.recv()
            except (EOFError, OSError):
                if not w.ready:
                    self._startup_failures += 1
                    if self._startup_failures > 3:
                        self.close()
                        raise RuntimeError(
                            "scoring workers die before they are ready (see their traceback above); with the "
                            "'spawn' start method the main module must be importable (run from a file, not "
                            "stdin), or use RewardPool(workers=0)"
                        ) from None
                if w.task is not None:
                    w.process.join(timeout=1)
                    verdicts[w.task] = (0.0, f"worker_died: exit code {w.process.exitcode}")
                self._replace(k)
                continue
            if task_id == "ready":
                w.ready = True
                self._startup_failures = 0
            else:
                verdicts[task_id] = (float(reward), str(reason))
                w.task, w.deadline = None, float("inf")

    def _expire(self, verdicts: list[Verdict | None]) -> None:
        now = time.monotonic()
        for k, w in enumerate(self._workers):
            if w.task is not None and now > w.deadline:
                verdicts[w.task] = (0.0, "timeout")
                self._replace(k)

    def _replace(self, k: int) -> None:
        self._workers[k].kill()
        self._workers[k] = self._spawn()
        self.restarts += 1
