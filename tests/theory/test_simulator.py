"""The token-level simulator: its closed-form maths against autograd and Theorem 1, and its invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brorl.theory import mass_balance
from brorl.theory.simulator import (
    _batch,
    _batch_terms,
    _paper_grad,
    _Sampler,
    _theorem_step,
    initial_logits,
    simulate,
)

SMALL = dict(vocab_size=600, num_correct=60, steps=30)


def _random_policy(rows: int, vocab: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, vocab, dtype=torch.float64, generator=g) * 2
    return z, torch.softmax(z, -1)


def _draw(p: torch.Tensor, ns: list[int], seeds: list[int]):
    """One step's draws for the rows of ``p`` and their dense (R, V) counts."""
    R, V = p.shape
    draws = _Sampler(ns, [np.random.default_rng(s) for s in seeds], V)(p)
    counts = np.zeros(R * V, dtype=np.int64)
    counts[draws[0]] = draws[1]
    return draws, torch.from_numpy(counts.reshape(R, V))


def test_paper_gradient_equals_autograd_of_the_surrogate_with_duplicates():
    K, ns = 7, [3, 50]
    z, p = _random_policy(2, 40, 0)
    draws, counts = _draw(p, ns, [1, 2])
    assert counts.max() > 1  # duplicates are present
    grad = _paper_grad(p, _batch(p, draws, K), torch.tensor(ns), 1.0, -1.0, torch.empty_like(p))
    for r, n in enumerate(ns):
        ids = torch.repeat_interleave(torch.arange(40), counts[r])  # the N draws, duplicates kept
        rewards = torch.where(ids < K, 1.0, -1.0).double()
        centred = rewards - rewards.mean()
        zr = z[r].clone().requires_grad_(True)
        loss = -(centred * torch.softmax(zr, -1)[ids]).sum() / n
        (expected,) = torch.autograd.grad(loss, zr)
        torch.testing.assert_close(grad[r], expected, rtol=1e-10, atol=1e-15)


def test_batch_terms_equal_mass_balance():
    K, ns = 30, [5, 400]
    _, p = _random_policy(2, 300, 4)
    draws, counts = _draw(p, ns, [5, 6])
    pk, pw = p[:, :K], p[:, K:]
    terms = _batch_terms(
        _batch(p, draws, K),
        pk.sum(-1),
        (pk * pk).sum(-1),
        (pw * pw).sum(-1),
        0.7,
        torch.tensor(ns),
        1.0,
        -1.0,
    )
    correct = np.arange(300) < K
    for r, n in enumerate(ns):
        sampled = np.repeat(np.arange(300), counts[r].numpy())
        assert sampled.size == n
        mb = mass_balance(p[r].numpy(), correct, sampled, lr=0.7)
        for key in ("s_r", "sampled_correct_term", "sampled_wrong_term", "unsampled_term"):
            assert float(terms[key][r]) == pytest.approx(getattr(mb, key), rel=1e-9, abs=1e-18), key


def test_theorem_step_is_the_set_semantics_gradient_step():
    K, ns = 10, torch.tensor([8])
    z, p = _random_policy(1, 50, 7)
    sampled = torch.zeros(1, 50, dtype=torch.float64)
    sampled[0, [1, 3, 3, 20, 44]] = 1.0
    dz = _theorem_step(p, sampled, K, 2.0, ns, 1.0, -0.5)
    zr = z[0].clone().requires_grad_(True)
    ids = torch.tensor([1, 3, 20, 44])  # distinct tokens only
    rewards = torch.where(ids < K, 1.0, -0.5).double()
    loss = -(rewards * torch.softmax(zr, -1)[ids]).sum() / 8
    (grad,) = torch.autograd.grad(loss, zr)
    torch.testing.assert_close(dz[0], -2.0 * grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [5, 60, 2000])
def test_draws_are_multinomial(n, dtype):
    # both ways of locating draws: blocks (few draws; V = 300 is not a multiple of the block) and numpy's interp
    V, R = 300, 8
    p = torch.softmax(torch.randn(R, V, dtype=torch.float64, generator=torch.Generator().manual_seed(n)), -1)
    p[0, 17] = 0.0  # a token that must never be drawn
    p = (p / p.sum(-1, keepdim=True)).to(dtype)
    sample = _Sampler([n] * R, [np.random.default_rng(s) for s in range(R)], V)
    assert (sample.groups[0][4] > 0) == (n == 5)
    reps = 20_000 // n + 10
    total = np.zeros(R * V)
    for _ in range(reps):
        uid, cnt = sample(p)
        assert np.all(np.diff(uid) > 0) and np.all(cnt > 0)
        assert np.array_equal(np.bincount(uid // V, weights=cnt, minlength=R), [n] * R)
        total[uid] += cnt
    total = total.reshape(R, V)
    assert total[0, 17] == 0
    expected = p.double().numpy() * reps * n
    keep = expected > 0
    chi2 = (((total - expected) ** 2)[keep] / expected[keep]).sum() / keep.sum()  # ≈ 1 ± 0.03 if multinomial
    assert 0.85 < chi2 < 1.15


def test_a_row_draws_the_same_whatever_shares_the_batch():
    # equal N in rows that are not adjacent, and both ways of locating draws in one batch
    V, ns = 300, [5, 2000, 5]
    _, p = _random_policy(3, V, 9)
    uid, cnt = _Sampler(ns, [np.random.default_rng(s) for s in range(3)], V)(p)
    for r, n in enumerate(ns):
        alone_uid, alone_cnt = _Sampler([n], [np.random.default_rng(r)], V)(p[r : r + 1])
        mine = uid // V == r
        np.testing.assert_array_equal(uid[mine] - r * V, alone_uid)
        np.testing.assert_array_equal(cnt[mine], alone_cnt)


def test_initial_logits_match_the_paper_start():
    z = initial_logits(128_000, 10_000, "seeded")
    q_pos = torch.softmax(z.double(), -1)[:10_000].sum().item()
    assert q_pos == pytest.approx(0.63, abs=0.005)  # BRORL.md §3: Figure 3 starts near 0.63
    assert torch.softmax(initial_logits(100, 10, "zero"), -1)[:10].sum().item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="init"):
        initial_logits(10, 2, "random")


def test_a_run_does_not_depend_on_which_runs_share_the_batch():
    alone = simulate([16], [1], **SMALL)
    together = simulate([4, 16, 256], [0, 1], **SMALL)
    r = together.runs.index((16, 1))
    for key, values in alone.metrics.items():
        np.testing.assert_allclose(together.metrics[key][r], values[0], rtol=1e-6, atol=1e-12, err_msg=key)


def test_same_seed_same_result():
    a = simulate([8, 64], [3], **SMALL)
    b = simulate([8, 64], [3], **SMALL)
    for key in a.metrics:
        np.testing.assert_array_equal(a.metrics[key], b.metrics[key])


def test_theorem_mode_measured_change_matches_the_prediction():
    res = simulate([4, 256], [0], mode="theorem", lr=2.0, dtype=torch.float64, **SMALL)
    pred, meas = res.metrics["predicted_delta"][:, 1:], res.metrics["measured_delta"][:, 1:]
    assert np.all(np.isfinite(pred)) and np.abs(pred).min() > 0
    np.testing.assert_allclose(meas, pred, rtol=0.05)
    summary = res.summary()
    assert summary["4"]["max_rel_linearisation_error"]["max"] < 0.05


def test_larger_n_improves_more_correct_tokens_and_shrinks_the_unsampled_term():
    # BroRL §4.1 at a small size: with more rollouts more correct tokens rise and the unsampled term fades
    res = simulate([4, 2048], [0, 1], vocab_size=2000, num_correct=200, steps=150)
    s = res.summary()
    assert s["2048"]["improved_frac"]["mean"] > s["4"]["improved_frac"]["mean"] + 0.3
    assert s["2048"]["mean_abs_unsampled_term"]["mean"] < s["4"]["mean_abs_unsampled_term"]["mean"]
    assert s["2048"]["q_pos_gain"]["mean"] > 0


def test_rows_have_the_documented_columns():
    res = simulate([4], [0], vocab_size=50, num_correct=5, steps=3)
    rows = list(res.rows())
    assert len(rows) == 4
    assert list(rows[0]) == [
        "n",
        "seed",
        "step",
        "q_pos",
        "improved_frac",
        "worst_drop",
        "s_r",
        "sampled_correct_term",
        "sampled_wrong_term",
        "unsampled_term",
    ]
    assert np.isnan(rows[0]["s_r"]) and not np.isnan(rows[1]["s_r"])


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(rollouts=[0]), "rollouts"),
        (dict(rollouts=[4, 4]), "repeats"),
        (dict(num_correct=50, vocab_size=50), "num_correct"),
        (dict(lr=-1.0), "lr"),
        (dict(mode="adam"), "mode"),
        (dict(r_correct=-1.0, r_wrong=1.0), "r_correct"),
    ],
)
def test_simulate_rejects_bad_settings(kwargs, fragment):
    args = dict(rollouts=[4], seeds=[0], vocab_size=100, num_correct=10, steps=2) | kwargs
    with pytest.raises(ValueError, match=fragment):
        simulate(args.pop("rollouts"), args.pop("seeds"), **args)
