"""Evaluating a model on held-out problems: N samples per instance, scored, reduced to per-instance records.

BroRL App. D: pass@1 averaged over k = 16 samples per instance at temperature 0.6, top-p 0.95. This module
only turns (problems, a rollout backend, a scorer) into :class:`~brorl.eval.passk.InstanceResult` records;
loading the model, choosing the problems and writing files is the ``brorl eval`` command's job.

    brorl eval --model RUN/checkpoints/step_000100 --tasks tiny-default --instances 50

The backend is anything with ``generate(prompts, n, params, prompt_keys=...) -> RolloutBatch``
(:class:`brorl.rollout.types.RolloutBackend`); the scorer anything with ``score(problems, completions, n,
finish_reasons)`` returning an object with ``correct`` (B*N,) and, optionally, the extracted answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from brorl.eval.passk import InstanceResult

TOP_ANSWERS = 3  # most frequent answers kept per instance, for reading failures by eye


def _answers_of(score_result: Any) -> list[str | None] | None:
    """The extracted answers (B*N,) of a score result, whatever the scorer calls the field."""
    for name in ("answers", "extracted", "extracted_answers"):
        value = getattr(score_result, name, None)
        if value is not None:
            return list(value)
    return None


def instance_record(
    problem: Any, correct: Sequence[bool], answers: Sequence[str | None] | None
) -> InstanceResult:
    """One instance's record from its N samples' correctness (N,) and extracted answers (N,) (None = no
    answer).

    ``distinct_answers`` counts distinct non-empty extracted answers; it is 0 when the scorer gave none.
    """
    counts = Counter(a for a in (answers or []) if a is not None)
    return InstanceResult(
        uid=problem.uid,
        task=problem.source,
        category=problem.category,
        samples=len(correct),
        correct=int(np.sum(np.asarray(correct, dtype=bool))),
        distinct_answers=len(counts),
        top_answers=[[a, c] for a, c in counts.most_common(TOP_ANSWERS)],
        answer=problem.answer,
    )


def evaluate_problems(
    problems: Sequence[Any],
    prompts: Sequence[str],
    backend: Any,
    scorer: Any,
    n: int,
    params: Any,
    *,
    prompts_per_call: int = 8,
    on_progress: Callable[[int], None] | None = None,
) -> list[InstanceResult]:
    """Sample ``n`` responses for each problem, score them, and reduce each problem to an
    :class:`InstanceResult`.

    Args:
        problems: B problems (``brorl.data.Problem``).
        prompts: B prompt texts, ``prompts[b]`` formatted from ``problems[b]``.
        backend: rollout backend; called with ``prompt_keys`` = the problems' global indices so a problem's
            samples do not depend on ``prompts_per_call``.
        scorer: ``score(problems (b,), completions (b*n,), n, finish_reasons (b*n,))`` with ``.correct``
        (b*n,). n: samples per instance (the k of "pass@1 averaged over k samples").
        params: ``SamplingParams`` for the backend.
        prompts_per_call: problems per ``generate`` call (the progress granularity; memory is the engine's
        job). on_progress: called with the number of problems finished after each call.

    Returns:
        B records, in the order of ``problems``.
    """
    if len(problems) != len(prompts) or not problems:
        raise ValueError(f"need as many prompts as problems (> 0), got {len(prompts)} and {len(problems)}")
    if n < 1 or prompts_per_call < 1:
        raise ValueError(f"n and prompts_per_call must be >= 1, got {n} and {prompts_per_call}")
    records: list[InstanceResult] = []
    for start in range(0, len(problems), prompts_per_call):
        chunk = list(problems[start : start + prompts_per_call])
        keys = list(range(start, start + len(chunk)))
        batch = backend.generate(list(prompts[start : start + len(chunk)]), n, params, prompt_keys=keys)
        result = scorer.score(chunk, list(batch.response_text), n, list(batch.finish_reason))
        correct = np.asarray(result.correct, dtype=bool).reshape(len(chunk), n)  # (b, N)
        answers = _answers_of(result)
        for b, problem in enumerate(chunk):
            group_answers = answers[b * n : (b + 1) * n] if answers is not None else None
            records.append(instance_record(problem, correct[b], group_answers))
        if on_progress is not None:
            on_progress(len(chunk))
    return records


def resolve_tasks(names: Sequence[str]) -> list[Any]:
    """TaskSpecs from names: each a mixture in ``brorl.data.MIXTURES`` or a reasoning-gym task (default
    settings).

    Raises:
        ValueError: for an unknown name (listing the mixtures) or a task named twice.
    """
    from brorl.data import MIXTURES, TaskSpec, task_names

    specs = []
    for name in names:
        if name in MIXTURES:
            specs.extend(MIXTURES[name])
        elif name in task_names():
            specs.append(TaskSpec(name))
        else:
            raise ValueError(
                f"unknown task or mixture {name!r}: use a mixture ({', '.join(sorted(MIXTURES))}) or a "
                "reasoning-gym task name (`python -c 'import brorl.data as d; print(d.task_names())'`)"
            )
    seen = [s.name for s in specs]
    twice = sorted({s for s in seen if seen.count(s) > 1})
    if twice:
        raise ValueError(f"task(s) {twice} appear more than once in --tasks; name each task once")
    return specs


def heldout_problems(specs: Sequence[Any], instances: int, seed: int, max_factor: int = 8) -> list[Any]:
    """Up to ``instances`` held-out problems per task with distinct questions, in a size-independent order.

    Easy tasks have small question spaces, so reasoning-gym repeats questions; evaluating a question twice
    would weigh it twice. We take the held-out stream in its own order (problem k of a task is the same for
    any size), keep the first occurrence of each question, and draw up to ``max_factor`` × ``instances`` items
    to find enough. A task whose held-out split has fewer distinct questions gives fewer instances (see the
    ``instances`` column of the tables). Held-out questions never appear in training (``brorl.data.gym``).

    Returns:
        problems (task by task, each in stream order).
    """
    from brorl.data import reasoning_gym_problems

    if instances < 1:
        raise ValueError(f"instances must be >= 1, got {instances}")
    out = []
    for spec in specs:
        unique: dict[str, Any] = {}
        size = instances
        while len(unique) < instances and size <= max_factor * instances:
            try:
                drawn = reasoning_gym_problems([spec], size=size, split="heldout", seed=seed)
            except ValueError:
                break  # the split ran out of items: keep what the previous size found
            unique = {}
            for p in sorted(drawn, key=lambda p: int(p.uid.rsplit("/", 1)[1])):
                unique.setdefault(p.question, p)
            size *= 2
        out.extend(list(unique.values())[:instances])
    return out
