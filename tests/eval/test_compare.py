"""Paired t-test against scipy, per-task deltas, knowledge shrinkage and trajectory patterns on constructed
cases."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import stats

from brorl.eval import (
    InstanceResult,
    classify_pattern,
    knowledge_shrinkage,
    pair_instances,
    paired_t_test,
    task_deltas,
    task_patterns,
)

# fixed data: 12 paired pass rates (multiples of 1/16, as with 16 samples per instance)
A = np.array([0, 2, 5, 8, 16, 3, 7, 9, 12, 1, 4, 10]) / 16
B = np.array([1, 2, 7, 8, 15, 6, 9, 9, 14, 3, 4, 13]) / 16


def test_paired_t_test_matches_scipy_ttest_rel_one_tailed():
    got = paired_t_test(A, B)
    want = stats.ttest_rel(B, A, alternative="greater")
    assert got.t == pytest.approx(want.statistic, rel=1e-12)
    assert got.p_one_tailed == pytest.approx(want.pvalue, rel=1e-10)
    assert got.df == 11 and got.instances == 12
    assert got.mean_diff == pytest.approx((B - A).mean())
    ci = stats.ttest_rel(B, A).confidence_interval(0.95)
    assert (got.ci_low, got.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_paired_t_test_p_is_large_when_b_is_worse():
    got = paired_t_test(B, A)
    assert got.t < 0 and got.p_one_tailed > 0.9 and got.ci_high < 0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.0, 0.25, 0.5], [0.25, 0.5, 0.75]),  # exactly equal differences: scipy gives NaN too
        ([0.1, 0.2, 0.3], [0.2, 0.3, 0.4]),  # equal up to float round-off: NaN, not t ~ 5e15
    ],
)
def test_paired_t_test_with_constant_differences_is_nan(a, b):
    got = paired_t_test(a, b)
    assert math.isnan(got.t) and math.isnan(got.p_one_tailed) and math.isnan(got.ci_low)
    assert got.mean_diff == pytest.approx(0.25 if a[0] == 0 else 0.1)


@pytest.mark.parametrize(
    ("a", "b", "confidence", "match"),
    [
        ([0.1], [0.2], 0.95, "at least 2"),
        ([0.1, 0.2], [0.2], 0.95, "equal length"),
        ([0, 1], [1, 0], 1.5, "(0, 1)"),
    ],
)
def test_paired_t_test_rejects_bad_input(a, b, confidence, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        paired_t_test(a, b, confidence)


def _recs(rates: dict[str, tuple[str, int]], samples: int = 4) -> list[InstanceResult]:
    return [InstanceResult(uid, task, task, samples, c) for uid, (task, c) in rates.items()]


def test_pairing_joins_on_uid_and_ignores_unshared_instances():
    a = _recs({"u1": ("t", 1), "u2": ("t", 2), "only_a": ("t", 4)})
    b = _recs({"u2": ("t", 3), "u1": ("t", 0), "only_b": ("t", 0)})
    pairs = pair_instances(a, b)
    assert [(x.uid, y.uid, y.correct) for x, y in pairs] == [("u1", "u1", 0), ("u2", "u2", 3)]
    with pytest.raises(ValueError, match="no shared instances"):
        pair_instances(a, _recs({"other": ("t", 1)}))


def test_task_deltas_count_wins_losses_ties_per_task():
    a = _recs({"1": ("p", 1), "2": ("p", 2), "3": ("p", 3), "4": ("q", 0)})
    b = _recs({"1": ("p", 2), "2": ("p", 2), "3": ("p", 1), "4": ("q", 4)})
    rows = {r["task"]: r for r in task_deltas(pair_instances(a, b))}
    assert (rows["p"]["wins"], rows["p"]["losses"], rows["p"]["ties"]) == (1, 1, 1)
    assert rows["p"]["delta"] == pytest.approx((1 + 0 - 2) / 4 / 3)
    assert rows["q"]["delta"] == pytest.approx(1.0)


def test_knowledge_shrinkage_counts_instances_that_fell_below_base():
    # base rates (of 4 samples): u1 1.0, u2 0.5, u3 0.25, u4 0.0, v1 0.75
    base = _recs({"u1": ("p", 4), "u2": ("p", 2), "u3": ("p", 1), "u4": ("p", 0), "v1": ("q", 3)})
    # later: u1 falls by 0.75, u2 by 0.25, u3 rises, u4 same, v1 falls by 0.5
    later = _recs({"u1": ("p", 1), "u2": ("p", 1), "u3": ("p", 3), "u4": ("p", 0), "v1": ("q", 1)})
    out = knowledge_shrinkage(base, later)
    assert out["instances"] == 5 and out["shrunk"] == 3
    assert out["shrunk_frac"] == pytest.approx(3 / 5)
    assert out["max_drop"] == pytest.approx(0.75)
    assert out["mean_drop"] == pytest.approx((0.75 + 0.25 + 0.5) / 3)
    assert out["total_drop"] == pytest.approx(1.5)
    assert [w["uid"] for w in out["worst"]] == ["u1", "v1", "u2"]
    per_task = {r["task"]: r for r in out["per_task"]}
    assert per_task["p"]["shrunk"] == 2 and per_task["q"]["shrunk"] == 1
    # a threshold of 0.3 ignores u2's fall of 0.25
    assert knowledge_shrinkage(base, later, threshold=0.3)["shrunk"] == 2
    with pytest.raises(ValueError, match="threshold"):
        knowledge_shrinkage(base, later, threshold=-1)


def test_knowledge_shrinkage_is_zero_when_nothing_fell():
    base = _recs({"u1": ("p", 1), "u2": ("p", 2)})
    out = knowledge_shrinkage(base, base)
    assert out["shrunk"] == 0 and out["max_drop"] == 0.0 and out["worst"] == []


STEPS = [0, 100, 200, 300]


@pytest.mark.parametrize(
    ("ya", "yb", "expected"),
    [
        # B above A at every step after the shared start, both improving
        ([0.40, 0.45, 0.48, 0.50], [0.40, 0.50, 0.55, 0.60], "b_ahead_throughout"),
        # A falls over the run while B rises: the paper's ProRL-degrades pattern
        ([0.40, 0.42, 0.38, 0.35], [0.40, 0.43, 0.46, 0.50], "a_degrades_b_improves"),
        # both flat within change_tol (the hardest tasks: string_synthesis, word_ladder, countdown)
        ([0.02, 0.01, 0.02, 0.02], [0.02, 0.03, 0.02, 0.025], "neither_improves"),
        # both flat, even though B is ahead: "neither improves" takes precedence
        ([0.02, 0.02, 0.02, 0.02], [0.02, 0.025, 0.028, 0.029], "neither_improves"),
        # both improve, B behind mid-run: no named pattern
        ([0.40, 0.50, 0.55, 0.60], [0.40, 0.45, 0.58, 0.62], "other"),
    ],
)
def test_classify_pattern_on_constructed_trajectories(ya, yb, expected):
    assert classify_pattern(STEPS, ya, STEPS, yb) == expected


def test_classify_pattern_aligns_runs_with_different_checkpoints_by_interpolation():
    # A checkpoints at x = 0, 100, 200, 300; B at 0, 150, 300. Comparison points: 100, 150, 200, 300.
    xa, ya = [0, 100, 200, 300], [0.40, 0.45, 0.55, 0.60]
    xb, yb = [0, 150, 300], [0.40, 0.52, 0.70]
    # gaps b − a: x=100: 0.48−0.45=0.03; x=150: 0.52−0.50=0.02 (A interpolated); x=200: 0.58−0.55; x=300: 0.10
    assert classify_pattern(xa, ya, xb, yb) == "b_ahead_throughout"
    assert classify_pattern(xa, ya, xb, yb, ahead_margin=0.025) == "other"  # the gap at x=150 is too small
    # B meeting A at x=150 (a tie) is not "ahead"
    assert classify_pattern(xa, ya, xb, [0.40, 0.50, 0.70]) == "other"


def test_task_patterns_rows_per_shared_task():
    traj_a = {"t1": (STEPS, [0.4, 0.42, 0.38, 0.35]), "only_a": (STEPS, [0, 0, 0, 0])}
    traj_b = {"t1": (STEPS, [0.4, 0.43, 0.46, 0.50])}
    rows = task_patterns(traj_a, traj_b)
    assert rows == [
        {
            "task": "t1",
            "pattern": "a_degrades_b_improves",
            "a_first": 0.4,
            "a_last": 0.35,
            "b_first": 0.4,
            "b_last": 0.5,
        }
    ]


def test_classify_pattern_rejects_unordered_checkpoints():
    with pytest.raises(ValueError, match="strictly increasing"):
        classify_pattern([0, 2, 1], [0, 0, 0], [0, 1, 2], [0, 0, 0])
