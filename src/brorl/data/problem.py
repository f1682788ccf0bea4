"""The two records every task source produces: :class:`Problem` (one question with what is needed to check it)
and :class:`TaskSpec` (one reasoning-gym task in a weighted mixture).

A ``Problem`` is plain data: it pickles to scoring worker processes and its ``metadata`` is JSON-serialisable,
so a list of problems can be written to JSONL and read back (:func:`problem_to_dict`,
:func:`problem_from_dict`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# verifier name -> what checks an answer (the scoring code lives in brorl.rewards)
VERIFIERS: tuple[str, ...] = ("reasoning_gym", "math", "code", "exact")


@dataclass(frozen=True)
class Problem:
    """One prompt's question and what is needed to verify an answer to it."""

    uid: str
    """Stable unique id, e.g. ``"basic_arithmetic/heldout/12"`` or ``"myfile/37"``."""
    source: str
    """reasoning-gym dataset name, or the file source's name."""
    category: str
    """reasoning-gym category (``"arithmetic"``, ``"algebra"``, ...); ``"math"``/``"code"``/``"custom"``."""
    question: str
    answer: str | None
    """Gold final answer as text (``None`` for code problems checked only by tests)."""
    solution: str | None
    """Worked solution when the data has one (used by SFT)."""
    verifier: str
    """One of :data:`VERIFIERS`: ``"reasoning_gym" | "math" | "code" | "exact"``."""
    tests: Any = None
    """Code tests: Python source of assert statements, or a list of ``{"input": str, "output": str}``."""
    metadata: dict = field(default_factory=dict)
    """Verifier payload, JSON-serialisable (for reasoning-gym: task, config, seed, index and the entry)."""

    def __post_init__(self) -> None:
        if self.verifier not in VERIFIERS:
            raise ValueError(
                f"Problem {self.uid!r}: unknown verifier {self.verifier!r}; use one of {VERIFIERS}"
            )
        if self.verifier == "code" and self.tests is None:
            raise ValueError(
                f"Problem {self.uid!r}: verifier 'code' needs tests (assert source or I/O cases)"
            )

    def __hash__(self) -> int:  # metadata is a dict, so hash by identity of the record's key
        return hash(self.uid)


@dataclass(frozen=True)
class TaskSpec:
    """One reasoning-gym task in a mixture: its dataset name, sampling weight and dataset options."""

    name: str
    """reasoning-gym dataset name (``reasoning_gym.factory.DATASETS``), e.g. ``"basic_arithmetic"``."""
    weight: float = 1.0
    """Relative share of the mixture's problems (normalised over the mixture)."""
    config: dict = field(default_factory=dict)
    """reasoning-gym dataset options (its ``*Config`` dataclass fields, e.g. ``{"max_digits": 1}``);
    ``seed`` and ``size`` are set by brorl and must not appear here."""

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"TaskSpec {self.name!r}: weight must be > 0, got {self.weight}")
        clash = {"seed", "size"} & set(self.config)
        if clash:
            raise ValueError(
                f"TaskSpec {self.name!r}: remove {sorted(clash)} from config; brorl derives them from the "
                "split seed and the requested size"
            )

    def __hash__(self) -> int:
        return hash((self.name, self.weight, json.dumps(self.config, sort_keys=True, default=str)))


def problem_to_dict(problem: Problem) -> dict:
    """A JSON-serialisable dict of all fields (round-trips through :func:`problem_from_dict`)."""
    return dataclasses.asdict(problem)


def problem_from_dict(row: dict) -> Problem:
    """Inverse of :func:`problem_to_dict`."""
    names = {f.name for f in dataclasses.fields(Problem)}
    return Problem(**{k: v for k, v in row.items() if k in names})
