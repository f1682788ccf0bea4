"""Unbiased pass@k and per-instance / per-task aggregation (BroRL App. D; BRORL.md §5 and §7 item 7).

For an instance with n samples of which c are correct, the unbiased estimator of pass@k is

    pass@k = 1 − C(n−c, k) / C(n, k)

(Chen et al. 2021, "Evaluating Large Language Models Trained on Code"). Binomial coefficients overflow for the
n used in BroRL (hundreds), so it is computed in the product form

    C(n−c, k) / C(n, k) = Π_{i=n−c+1}^{n} (1 − k/i)

which only multiplies numbers in [0, 1]. pass@1 reduces to c/n: "pass@1 averaged over k samples" in the paper
is the mean over instances of c/n with n = 16.

Aggregates are *means over instances of per-instance estimates*, so every instance weighs the same within its
task or category. Tasks are macro-averaged (each task weighs the same) in the ``macro`` row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _check_counts(n: np.ndarray, c: np.ndarray, k: np.ndarray) -> None:
    for name, arr in (("n", n), ("c", c), ("k", k)):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"pass_at_k: {name} must hold whole numbers, got {arr!r}")
    if np.any(c < 0) or np.any(c > n):
        raise ValueError(
            f"pass_at_k: need 0 <= c <= n (correct count within the samples), got n={n!r}, c={c!r}"
        )
    if np.any(k < 1) or np.any(k > n):
        raise ValueError(
            f"pass_at_k: need 1 <= k <= n (cannot estimate pass@k from fewer than k samples), "
            f"got n={n!r}, k={k!r}"
        )


def _pass_at_k_scalar(n: int, c: int, k: int) -> float:
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def pass_at_k(n: Any, c: Any, k: Any) -> Any:
    """Unbiased pass@k = 1 − C(n−c, k)/C(n, k), in the numerically stable product form.

    Args:
        n: samples per instance, int or integer array.
        c: correct samples per instance, int or integer array, 0 <= c <= n.
        k: the k of pass@k, int or integer array, 1 <= k <= n.
    The three broadcast against each other (numpy rules), e.g. n, c of shape (I,) and k a scalar.

    Returns:
        a float for scalar inputs, otherwise a float64 array of the broadcast shape.

    Raises:
        ValueError: if counts are not whole numbers, c is outside [0, n] or k outside [1, n].
    """
    n_arr, c_arr, k_arr = (np.asarray(x) for x in (n, c, k))
    _check_counts(n_arr, c_arr, k_arr)
    if n_arr.ndim == c_arr.ndim == k_arr.ndim == 0:
        return _pass_at_k_scalar(int(n_arr), int(c_arr), int(k_arr))
    n_b, c_b, k_b = (a.astype(np.int64).ravel() for a in np.broadcast_arrays(n_arr, c_arr, k_arr))
    # Pad every product to the longest one (max c terms); padded terms are 1 and change nothing.
    width = int(c_b.max()) if c_b.size else 0
    offsets = np.arange(1, width + 1)  # (W,)
    i = (n_b - c_b)[:, None] + offsets[None, :]  # (M, W): runs over n−c+1 .. n−c+W
    valid = offsets[None, :] <= c_b[:, None]  # (M, W)
    terms = np.where(valid, 1.0 - k_b[:, None] / np.maximum(i, 1), 1.0)  # (M, W)
    miss = np.prod(terms, axis=1)  # (M,)
    out = np.where(n_b - c_b < k_b, 1.0, 1.0 - miss)
    return out.reshape(np.broadcast_shapes(n_arr.shape, c_arr.shape, k_arr.shape))


@dataclass(frozen=True)
class InstanceResult:
    """One evaluated instance: its identity and how its samples fared.

    ``uid`` identifies the instance across evaluations (the paired comparison joins on it).
    """

    uid: str
    task: str
    category: str
    samples: int
    correct: int
    distinct_answers: int = 0
    top_answers: list[list[Any]] = field(default_factory=list)  # [[answer, count], ...] most frequent first
    answer: str | None = None  # the gold answer, for reading the records by eye

    def __post_init__(self) -> None:
        if self.samples < 1 or not 0 <= self.correct <= self.samples:
            raise ValueError(
                f"instance {self.uid!r}: need samples >= 1 and 0 <= correct <= samples, "
                f"got samples={self.samples}, correct={self.correct}"
            )

    @property
    def pass_rate(self) -> float:
        """pass@1 averaged over this instance's samples: correct / samples."""
        return self.correct / self.samples

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceResult:
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {"uid", "task", "samples", "correct"} - set(data)
        if missing:
            raise ValueError(f"instance record lacks {sorted(missing)}: {data!r}")
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs.setdefault("category", kwargs["task"])
        return cls(**kwargs)


def _group_row(name: str, records: Sequence[InstanceResult], ks: Sequence[int]) -> dict[str, Any]:
    n = np.array([r.samples for r in records])  # (I,)
    c = np.array([r.correct for r in records])  # (I,)
    row: dict[str, Any] = {
        "name": name,
        "instances": len(records),
        "samples": int(n.min()) if int(n.min()) == int(n.max()) else f"{int(n.min())}-{int(n.max())}",
        "pass@1": float(np.mean(c / n)),
    }
    for k in ks:
        if k == 1:
            continue
        # pass@k is only defined when every instance has at least k samples; otherwise report it as missing.
        row[f"pass@{k}"] = float(np.mean(pass_at_k(n, c, k))) if k <= n.min() else None
    row["distinct_answers"] = float(np.mean([r.distinct_answers for r in records]))
    return row


def aggregate(
    records: Iterable[InstanceResult], ks: Sequence[int] = (1,), by: str = "task"
) -> list[dict[str, Any]]:
    """Rows of a table: one per group (sorted by name), each the mean over its instances.

    Args:
        records: per-instance results (I of them).
        ks: the k values to report; pass@1 is always included. pass@k is ``None`` for a group where some
            instance has fewer than k samples.
        by: ``"task"``, ``"category"`` or ``"all"`` (a single row named ``all``).

    Returns:
        list of dicts with keys ``name``, ``instances``, ``samples``, ``pass@1``, ``pass@k`` for each k,
        ``distinct_answers``.
    """
    keys = {"task": lambda r: r.task, "category": lambda r: r.category, "all": lambda r: "all"}
    if by not in keys:
        raise ValueError(f"aggregate: by={by!r} is not one of {sorted(keys)}")
    groups: dict[str, list[InstanceResult]] = {}
    for r in records:
        groups.setdefault(keys[by](r), []).append(r)
    if not groups:
        raise ValueError("aggregate: no instance records to aggregate")
    return [_group_row(name, groups[name], ks) for name in sorted(groups)]


def macro_row(task_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The unweighted mean of per-task rows (each task weighs the same, as in the paper's category scores)."""
    row: dict[str, Any] = {
        "name": "macro",
        "instances": sum(r["instances"] for r in task_rows),
        "samples": "",
    }
    metric_keys = [k for k in task_rows[0] if k.startswith("pass@") or k == "distinct_answers"]
    for key in metric_keys:
        vals = [r[key] for r in task_rows]
        row[key] = None if any(v is None for v in vals) else float(np.mean(vals))
    return row


def summary_metrics(records: Sequence[InstanceResult], ks: Sequence[int] = (1,)) -> dict[str, float]:
    """Flat ``eval/`` metrics for a metrics.jsonl line (definitions in docs/metrics.md).

    ``eval/pass@1`` is the mean over all instances; ``eval/pass@1/<task>`` per task; ``eval/pass@1_macro`` the
    mean over tasks; likewise ``eval/pass@<k>`` for each k in ``ks`` that every instance has samples for.
    """
    out: dict[str, float] = {}
    overall = aggregate(records, ks, by="all")[0]
    tasks = aggregate(records, ks, by="task")
    macro = macro_row(tasks)
    for key in [k for k in overall if k.startswith("pass@")]:
        if overall[key] is None:
            continue
        out[f"eval/{key}"] = overall[key]
        out[f"eval/{key}_macro"] = macro[key]
        for row in tasks:
            out[f"eval/{key}/{row['name']}"] = row[key]
    return out
