"""pass@k against brute-force enumeration of k-subsets, and the per-task / per-category aggregation."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

from brorl.eval import InstanceResult, aggregate, macro_row, pass_at_k, summary_metrics


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of the n samples (the first c correct) holding at least one correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 10])
def test_pass_at_k_equals_fraction_of_k_subsets_with_a_correct_sample(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_vectorised_pass_at_k_matches_scalar_over_random_counts():
    rng = np.random.default_rng(0)
    n = rng.integers(1, 40, size=200)
    c = rng.integers(0, n + 1)
    k = rng.integers(1, n + 1)
    got = pass_at_k(n, c, k)
    want = [pass_at_k(int(a), int(b), int(kk)) for a, b, kk in zip(n, c, k, strict=True)]
    assert got.shape == (200,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_pass_at_k_broadcasts_scalar_k_and_2d_counts():
    n = np.full((2, 3), 16)
    c = np.array([[0, 1, 2], [8, 15, 16]])
    got = pass_at_k(n, c, 4)
    assert got.shape == (2, 3)
    assert got[1, 1] == pytest.approx(1.0) and got[0, 0] == 0.0
    assert got[0, 1] == pytest.approx(4 / 16)  # one correct sample: in a random 4-subset with prob 4/16


@pytest.mark.parametrize(("n", "c", "k"), [(512, 1, 16), (512, 100, 64), (2000, 3, 1000)])
def test_pass_at_k_is_stable_where_binomials_overflow_floats(n, c, k):
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)  # Python integers: exact, then one division
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-10)


def test_pass_at_1_is_the_fraction_correct():
    assert pass_at_k(16, 5, 1) == pytest.approx(5 / 16)


@pytest.mark.parametrize(
    ("n", "c", "k", "what"),
    [
        (4, 5, 1, "0 <= c <= n"),  # more correct than samples
        (4, -1, 1, "0 <= c <= n"),
        (4, 2, 5, "1 <= k <= n"),  # cannot estimate pass@5 from 4 samples
        (4, 2, 0, "1 <= k <= n"),
        (4.5, 2, 1, "whole numbers"),
    ],
)
def test_pass_at_k_rejects_impossible_counts_with_a_clear_message(n, c, k, what):
    with pytest.raises(ValueError, match=re.escape(what)):
        pass_at_k(n, c, k)


def _records() -> list[InstanceResult]:
    # task a (category x): pass rates 1/4 and 3/4; task b (category x): 0/4; task c (category y): 4/4, 2/4
    rows = [
        ("a1", "a", "x", 1),
        ("a2", "a", "x", 3),
        ("b1", "b", "x", 0),
        ("c1", "c", "y", 4),
        ("c2", "c", "y", 2),
    ]
    return [InstanceResult(uid, t, cat, samples=4, correct=k, distinct_answers=2) for uid, t, cat, k in rows]


def test_aggregate_means_per_instance_rates_within_each_task_and_category():
    tasks = {r["name"]: r for r in aggregate(_records(), ks=(1, 2), by="task")}
    assert tasks["a"]["pass@1"] == pytest.approx(0.5)
    assert tasks["b"]["pass@1"] == 0.0
    assert tasks["c"]["pass@1"] == pytest.approx(0.75)
    # pass@2 of 1/4: 1 − C(3,2)/C(4,2) = 1 − 3/6 = 0.5; of 3/4: 1; mean 0.75
    assert tasks["a"]["pass@2"] == pytest.approx(0.75)
    cats = {r["name"]: r for r in aggregate(_records(), ks=(1,), by="category")}
    assert cats["x"]["pass@1"] == pytest.approx((0.25 + 0.75 + 0.0) / 3)  # instance mean, not task mean
    assert cats["y"]["instances"] == 2
    assert aggregate(_records(), by="all")[0]["pass@1"] == pytest.approx(2.5 / 5)


def test_macro_row_weighs_tasks_equally_and_summary_metrics_are_namespaced():
    tasks = aggregate(_records(), ks=(1,), by="task")
    assert macro_row(tasks)["pass@1"] == pytest.approx((0.5 + 0.0 + 0.75) / 3)
    metrics = summary_metrics(_records(), ks=(1, 4))
    assert metrics["eval/pass@1"] == pytest.approx(0.5)
    assert metrics["eval/pass@1/c"] == pytest.approx(0.75)
    assert metrics["eval/pass@4/b"] == 0.0
    assert metrics["eval/pass@4_macro"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)


def test_pass_at_k_missing_when_some_instance_has_fewer_than_k_samples():
    recs = [*_records(), InstanceResult("a3", "a", "x", samples=2, correct=1)]
    tasks = {r["name"]: r for r in aggregate(recs, ks=(1, 4), by="task")}
    assert tasks["a"]["pass@4"] is None and tasks["b"]["pass@4"] == 0.0
    assert tasks["a"]["samples"] == "2-4"


@pytest.mark.parametrize(("samples", "correct"), [(0, 0), (4, 5), (4, -1)])
def test_instance_result_rejects_inconsistent_counts(samples, correct):
    with pytest.raises(ValueError, match="0 <= correct <= samples"):
        InstanceResult("u", "t", "c", samples=samples, correct=correct)


def test_aggregate_rejects_unknown_grouping():
    with pytest.raises(ValueError, match="category"):
        aggregate(_records(), by="difficulty")
