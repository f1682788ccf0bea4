"""Paired comparison of two evaluations: t-test, per-task deltas, knowledge shrinkage, per-task patterns.

Implements the statistics of BroRL App. D / BRORL.md §5:

- **Paired t-test** over the instances both evaluations share (joined on ``uid``). Each instance contributes
  d_i = pass_rate_B(i) − pass_rate_A(i) (pass@1 averaged over its samples). With m instances,
  t = mean(d) / (sd(d)/√m), sd with Bessel's correction, df = m − 1; the one-tailed p-value tests
  "B is better than A" (H1: mean d > 0), as the paper's Δ = 0.0033, t = 4.84, p = 6.5e-7. The confidence
  interval is the two-sided ``confidence`` interval of mean(d). Equals ``scipy.stats.ttest_rel(b, a,
  alternative="greater")``.
- **Knowledge shrinkage** against a base evaluation: the instances whose pass rate fell below the base's by
more
  than ``threshold`` (default 0: any fall), how many, and by how much, per task. This is the instance-level
  counterpart of the simulator's ``sim/worst_drop``.
- **Per-task patterns** over checkpoints (trajectories), the paper's three: ``b_ahead_throughout``,
  ``a_degrades_b_improves``, ``neither_improves`` (plus ``other``). Rules in :func:`classify_pattern`.

Everything here takes plain records and numbers; reading directories is :mod:`brorl.eval.io`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from brorl.eval.passk import InstanceResult


@dataclass(frozen=True)
class PairedTTest:
    """Result of a one-tailed paired t-test of B > A over m shared instances."""

    instances: int  # m
    mean_a: float
    mean_b: float
    mean_diff: float  # mean over instances of (B − A)
    t: float  # NaN when every difference is equal (zero variance), as scipy
    df: int  # m − 1
    p_one_tailed: float  # P(T_df >= t): small means B is better
    ci_low: float  # two-sided `confidence` interval of mean_diff
    ci_high: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_t_test(a: Any, b: Any, confidence: float = 0.95) -> PairedTTest:
    """One-tailed paired t-test that B beats A.

    Args:
        a, b: per-instance scores (m,), paired by position (e.g. pass rates of the same instances).
        confidence: level of the two-sided confidence interval of the mean difference, in (0, 1).

    Returns:
        :class:`PairedTTest`. When all differences are equal (zero variance, up to float round-off) t, p and
        the interval are NaN, as in scipy.
    """
    from scipy import stats  # import here: scipy is slow to import and only needed for this

    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(
            f"paired_t_test: a and b must be 1-D of equal length, got {a_arr.shape} and {b_arr.shape}"
        )
    if a_arr.size < 2:
        raise ValueError(f"paired_t_test: need at least 2 paired instances, got {a_arr.size}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"paired_t_test: confidence must be in (0, 1), got {confidence}")
    d = b_arr - a_arr  # (m,)
    m = d.size
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(m)
    # Differences equal up to round-off (0.2−0.1 vs 0.3−0.2) would give t ~ 1e15: treat them as constant.
    if sd <= 1e-12 * max(1.0, abs(mean)):
        t = p = lo = hi = math.nan
    else:
        t = mean / se
        p = float(stats.t.sf(t, m - 1))
        half = float(stats.t.ppf(0.5 + confidence / 2, m - 1)) * se
        lo, hi = mean - half, mean + half
    return PairedTTest(m, float(a_arr.mean()), float(b_arr.mean()), mean, t, m - 1, p, lo, hi, confidence)


def pair_instances(
    a: Sequence[InstanceResult], b: Sequence[InstanceResult]
) -> list[tuple[InstanceResult, InstanceResult]]:
    """The (A, B) records of the instances both evaluations hold, joined on ``uid``, in A's order.

    Raises:
        ValueError: if no instance is shared (the two evaluations used different instances: re-run them with
            the same ``--tasks``, ``--instances`` and ``--seed``).
    """
    by_uid = {r.uid: r for r in b}
    pairs = [(r, by_uid[r.uid]) for r in a if r.uid in by_uid]
    if not pairs:
        raise ValueError(
            "no shared instances between the two evaluations (joined on uid): evaluate both models with the "
            "same --tasks, --instances and --seed"
        )
    return pairs


def task_deltas(pairs: Sequence[tuple[InstanceResult, InstanceResult]]) -> list[dict[str, Any]]:
    """Per-task rows over shared instances: pass@1 of A and B, their difference, and wins/losses/ties.

    ``wins`` counts instances where B's pass rate is higher than A's. Rows sorted by task name.
    """
    groups: dict[str, list[tuple[InstanceResult, InstanceResult]]] = {}
    for ra, rb in pairs:
        groups.setdefault(ra.task, []).append((ra, rb))
    rows = []
    for task in sorted(groups):
        pa = np.array([ra.pass_rate for ra, _ in groups[task]])  # (I_task,)
        pb = np.array([rb.pass_rate for _, rb in groups[task]])  # (I_task,)
        rows.append(
            {
                "task": task,
                "instances": len(pa),
                "pass@1_a": float(pa.mean()),
                "pass@1_b": float(pb.mean()),
                "delta": float((pb - pa).mean()),
                "wins": int((pb > pa).sum()),
                "losses": int((pb < pa).sum()),
                "ties": int((pb == pa).sum()),
            }
        )
    return rows


def knowledge_shrinkage(
    base: Sequence[InstanceResult], other: Sequence[InstanceResult], threshold: float = 0.0
) -> dict[str, Any]:
    """Instances whose pass rate fell below the base's by more than ``threshold``.

    Args:
        base: the starting model's records.
        other: a later model's records; only instances shared with ``base`` count.
        threshold: a fall must exceed this (absolute pass-rate units, >= 0) to count. With 16 samples one
            sample less is a fall of 1/16 = 0.0625, so a threshold just below a multiple of 1/n ignores
            single-sample noise.

    Returns:
        dict with ``instances`` (shared), ``shrunk`` (count), ``shrunk_frac``, ``mean_drop`` (mean fall over
        the shrunk instances, 0 if none), ``max_drop``, ``total_drop`` (sum of falls, in instances' worth of
        pass rate), ``worst`` (up to 10 ``{uid, task, base, other, drop}`` largest falls first) and
        ``per_task`` (the same counts per task, a list of rows).
    """
    if threshold < 0:
        raise ValueError(f"knowledge_shrinkage: threshold must be >= 0, got {threshold}")
    pairs = pair_instances(base, other)
    drops = [(rb, ro, rb.pass_rate - ro.pass_rate) for rb, ro in pairs]
    out = _shrink_stats(drops, threshold)
    out["worst"] = [
        {"uid": rb.uid, "task": rb.task, "base": rb.pass_rate, "other": ro.pass_rate, "drop": drop}
        for rb, ro, drop in sorted(drops, key=lambda x: -x[2])[:10]
        if drop > threshold
    ]
    tasks = sorted({rb.task for rb, _, _ in drops})
    out["per_task"] = [
        {"task": t, **_shrink_stats([x for x in drops if x[0].task == t], threshold)} for t in tasks
    ]
    return out


def _shrink_stats(drops: Sequence[tuple[Any, Any, float]], threshold: float) -> dict[str, Any]:
    fallen = np.array([d for _, _, d in drops if d > threshold])  # (shrunk,)
    return {
        "instances": len(drops),
        "shrunk": int(fallen.size),
        "shrunk_frac": fallen.size / len(drops) if drops else 0.0,
        "mean_drop": float(fallen.mean()) if fallen.size else 0.0,
        "max_drop": float(fallen.max()) if fallen.size else 0.0,
        "total_drop": float(fallen.sum()),
    }


# ---------------------------------------------------------------------------------------------------------
# Per-task patterns over checkpoints (BroRL §5: the three trajectory shapes)

PATTERNS = ("neither_improves", "a_degrades_b_improves", "b_ahead_throughout", "other")


def classify_pattern(
    xa: Sequence[float],
    ya: Sequence[float],
    xb: Sequence[float],
    yb: Sequence[float],
    change_tol: float = 0.01,
    ahead_margin: float = 0.0,
) -> str:
    """Name the shape of one task's pair of trajectories (A = baseline run, B = new run).

    Args:
        xa, ya: A's checkpoints: progress coordinate (step, samples or hours; increasing) and pass@1, (Ta,).
        xb, yb: the same for B, (Tb,). Both need at least one point.
        change_tol: a run *improves* when last − first >= change_tol and *degrades* when last − first <=
            −change_tol (absolute pass@1).
        ahead_margin: B is *ahead* at a point when b(x) − a(x) > ahead_margin.

    Rules, checked in this order (the first that holds names the task):
        1. ``neither_improves``: Δa < change_tol and Δb < change_tol, with Δ = last − first of each run.
        2. ``a_degrades_b_improves``: Δa <= −change_tol and Δb >= change_tol.
        3. ``b_ahead_throughout``: B is ahead at every comparison point. Comparison points are the union of
        both
           runs' x inside their overlap, excluding the overlap's start when both runs start there (typically
           the shared base model, where they are equal); runs are linearly interpolated between checkpoints.
           Without such points (no overlap, or single checkpoints), the last values are compared.
        4. ``other``.
    """
    xa_, ya_, xb_, yb_ = (np.asarray(v, dtype=np.float64) for v in (xa, ya, xb, yb))
    for name, x, y in (("A", xa_, ya_), ("B", xb_, yb_)):
        if x.shape != y.shape or x.ndim != 1 or x.size == 0:
            raise ValueError(f"classify_pattern: run {name} needs equal-length non-empty x and y")
        if np.any(np.diff(x) <= 0):
            raise ValueError(
                f"classify_pattern: run {name}'s x must be strictly increasing, got {x.tolist()}"
            )
    da, db = ya_[-1] - ya_[0], yb_[-1] - yb_[0]
    if da < change_tol and db < change_tol:
        return "neither_improves"
    if da <= -change_tol and db >= change_tol:
        return "a_degrades_b_improves"
    gaps = _aligned_gaps(xa_, ya_, xb_, yb_)
    if np.all(gaps > ahead_margin):
        return "b_ahead_throughout"
    return "other"


def _aligned_gaps(xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """b(x) − a(x) at the comparison points described in :func:`classify_pattern`."""
    lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
    xs = np.union1d(xa, xb)
    xs = xs[(xs >= lo) & (xs <= hi)]
    if xa[0] == xb[0]:
        xs = xs[xs > lo]
    if xs.size == 0:
        return np.array([yb[-1] - ya[-1]])
    return np.interp(xs, xb, yb) - np.interp(xs, xa, ya)


def task_patterns(
    traj_a: dict[str, tuple[Sequence[float], Sequence[float]]],
    traj_b: dict[str, tuple[Sequence[float], Sequence[float]]],
    change_tol: float = 0.01,
    ahead_margin: float = 0.0,
) -> list[dict[str, Any]]:
    """One row per task present in both runs: the pattern plus first/last pass@1 of each run.

    Args:
        traj_a, traj_b: task -> (x, pass@1) over checkpoints, each sequence (T,) with x increasing.
    """
    rows = []
    for task in sorted(set(traj_a) & set(traj_b)):
        (xa, ya), (xb, yb) = traj_a[task], traj_b[task]
        rows.append(
            {
                "task": task,
                "pattern": classify_pattern(xa, ya, xb, yb, change_tol, ahead_margin),
                "a_first": float(ya[0]),
                "a_last": float(ya[-1]),
                "b_first": float(yb[0]),
                "b_last": float(yb[-1]),
            }
        )
    return rows
