"""Theorem 1, Lemma 2 / Corollary 3 and pass@k-from-mass against independent computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from brorl.theory import expected_unsampled_second_moment, mass_balance, pass_at_k_from_mass


def _case(rng: np.random.Generator, vocab: int, n: int, scale: float):
    """Random logits, correct set and N draws from p (float64)."""
    z = rng.normal(0.0, scale, vocab)
    p = np.exp(z - z.max())
    p /= p.sum()
    correct = rng.random(vocab) < rng.uniform(0.05, 0.95)
    if not correct.any():
        correct[rng.integers(vocab)] = True
    sampled = rng.choice(vocab, size=n, p=p)
    return z, p, correct, sampled


def _autograd_linearised_delta(z, correct, sampled, r_c, r_w, lr) -> float:
    """ΔQ_pos of one gradient step, linearised, by autograd: no Theorem 1 algebra involved.

    Δz = -η ∇L with L = -(1/N) Σ_{distinct sampled j} R_j softmax(z)_j, then the JVP of z -> Q_pos(softmax(z)).
    """
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor(np.unique(sampled))
    mask = torch.tensor(correct)
    rewards = torch.where(
        mask[ids], torch.tensor(r_c, dtype=torch.float64), torch.tensor(r_w, dtype=torch.float64)
    )
    loss = -(rewards * torch.softmax(zt, -1)[ids]).sum() / len(sampled)
    (grad,) = torch.autograd.grad(loss, zt)
    dz = -lr * grad

    def q_pos(x):
        return torch.softmax(x, -1)[mask].sum()

    _, tangent = torch.func.jvp(q_pos, (zt.detach(),), (dz,))
    return float(tangent)


@pytest.mark.parametrize("vocab", [2, 3, 10, 100, 1000, 10_000])
@pytest.mark.parametrize("n", [1, 7, 100, 1000])
def test_theorem1_equals_autograd_linearised_change(vocab, n):
    rng = np.random.default_rng(vocab * 7919 + n)
    for trial in range(4):
        z, p, correct, sampled = _case(rng, vocab, n, scale=[0.5, 2.0, 4.0, 8.0][trial])
        r_c, r_w = rng.uniform(0, 2), rng.uniform(-2, 0)
        lr = rng.uniform(0.1, 3.0)
        mb = mass_balance(p, correct, sampled, r_correct=r_c, r_wrong=r_w, lr=lr)
        expected = _autograd_linearised_delta(z, correct, sampled, r_c, r_w, lr)
        # relative to the size of the terms (and of one step's logit move, when every term vanishes)
        magnitude = abs(mb.sampled_correct_term) + abs(mb.sampled_wrong_term) + abs(mb.unsampled_term)
        step_scale = lr / n * float((p * p).sum()) * max(abs(r_c), abs(r_w))
        assert abs(mb.delta_q_pos - expected) <= 1e-10 * (magnitude + step_scale), (trial, mb, expected)
        # the two sampled terms never hurt when R_c >= 0 >= R_w
        assert mb.sampled_correct_term >= 0 and mb.sampled_wrong_term >= 0


def test_theorem1_matches_explicit_softmax_jacobian():
    rng = np.random.default_rng(3)
    _z, p, correct, sampled = _case(rng, 50, 20, scale=1.5)
    r = np.where(correct, 1.0, -1.0) * np.isin(np.arange(50), sampled)
    s_r = float(r @ p)
    dz = 0.5 / 20 * p * (r - s_r)
    jac = np.diag(p) - np.outer(p, p)  # ∂p/∂z of the softmax
    expected = float((jac @ dz)[correct].sum())
    assert mass_balance(p, correct, sampled, lr=0.5).delta_q_pos == pytest.approx(expected, rel=1e-12)


def test_finite_step_converges_to_theorem1_at_second_order():
    rng = np.random.default_rng(11)
    z, p, correct, sampled = _case(rng, 200, 64, scale=2.0)
    errors = []
    for lr in (40.0, 20.0, 10.0, 5.0):
        mb = mass_balance(p, correct, sampled, lr=lr)
        r = np.where(correct, 1.0, -1.0) * np.isin(np.arange(200), sampled)
        z_new = z + lr / 64 * p * (r - mb.s_r)
        p_new = np.exp(z_new - z_new.max())
        p_new /= p_new.sum()
        errors.append(abs((p_new[correct].sum() - mb.q_pos) - mb.delta_q_pos))
    ratios = [a / b for a, b in itertools.pairwise(errors)]
    assert all(3.5 < q < 4.5 for q in ratios), (errors, ratios)  # halving η quarters the error: O(η²)


# Hand-computed cases. p = (0.5, 0.3, 0.2), P = {0}, R_c = 1, R_w = -1, η = 1.
# (a) draws (0, 1): A = {0}, B = {1}, U = {2}; S_R = 0.5 - 0.3 = 0.2
#     t1 = ½·0.8·0.5·0.25 = 0.05, t2 = ½·1.2·0.5·0.09 = 0.027, t3 = ½·0.2·(0.5·0.04 − 0.5·0) = 0.002
# (b) draws (0, 0, 0): A = {0}, B = ∅, U = {1, 2}; S_R = 0.5, U_neg,2 = 0.13
#     t1 = ⅓·0.5·0.5·0.25 = 1/48, t2 = 0, t3 = ⅓·0.5·(0.5·0.13) = 0.0108333…
HAND_CASES = [
    (
        [0, 1],
        dict(
            s_r=0.2,
            sampled_correct_term=0.05,
            sampled_wrong_term=0.027,
            unsampled_term=0.002,
            delta_q_pos=0.079,
            a2=0.25,
            b2=0.09,
            u_pos2=0.0,
            u_neg2=0.04,
        ),
    ),
    (
        [0, 0, 0],
        dict(
            s_r=0.5,
            sampled_correct_term=1 / 48,
            sampled_wrong_term=0.0,
            unsampled_term=0.065 / 6,
            delta_q_pos=1 / 48 + 0.065 / 6,
            p_pos=0.5,
            p_neg=0.0,
        ),
    ),
]


@pytest.mark.parametrize(("sampled", "expected"), HAND_CASES)
def test_mass_balance_hand_computed(sampled, expected):
    mb = mass_balance(np.array([0.5, 0.3, 0.2]), np.array([True, False, False]), sampled)
    assert mb.q_pos == pytest.approx(0.5) and mb.q_neg == pytest.approx(0.5)
    for key, value in expected.items():
        assert getattr(mb, key) == pytest.approx(value, abs=1e-15), key


def test_mass_balance_accepts_torch_tensors():
    p = torch.softmax(torch.randn(1000, generator=torch.Generator().manual_seed(0)), -1)  # float32
    correct = torch.arange(1000) < 300
    sampled = torch.multinomial(p, 64, replacement=True, generator=torch.Generator().manual_seed(1))
    a = mass_balance(p, correct, sampled)
    b = mass_balance(p.double().numpy(), correct.numpy(), sampled.numpy())
    assert a == b


BAD_INPUTS = [
    # (probs, correct, sampled, kwargs, message fragment)
    ([0.5, 0.6, -0.1], [1, 0, 0], [0], {}, "non-negative"),
    ([0.5, 0.3, 0.1], [1, 0, 0], [0], {}, "sum to 1"),
    ([0.5, 0.5], [1, 0, 0], [0], {}, "shape"),
    ([0.5, 0.5], [1, 0], [2], {}, "range"),
    ([0.5, 0.5], [1, 0], [-1], {}, "range"),
    ([0.5, 0.5], [1, 0], [], {}, "empty"),
    ([0.5, 0.5], [1, 0], [0], {"r_correct": -1.0, "r_wrong": 1.0}, "r_correct"),
    ([[0.5, 0.5]], [1, 0], [0], {}, "1-D"),
    ([0.5, np.nan], [1, 0], [0], {}, "NaN"),
    ([0.5, 0.5], [1, 0], [0.5], {}, "integer"),
]


@pytest.mark.parametrize(("probs", "correct", "sampled", "kwargs", "fragment"), BAD_INPUTS)
def test_mass_balance_rejects_bad_input_with_a_clear_message(probs, correct, sampled, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        mass_balance(np.array(probs, dtype=float), np.array(correct), np.array(sampled), **kwargs)


@pytest.mark.parametrize("n", [1, 5, 20])
def test_lemma2_matches_monte_carlo(n):
    rng = np.random.default_rng(n)
    p = rng.dirichlet(np.full(30, 0.3))
    mask = rng.random(30) < 0.4
    trials = 40_000
    draws = np.stack([rng.choice(30, size=n, p=p) for _ in range(trials)])  # (trials, n)
    unsampled = np.ones((trials, 30), dtype=bool)
    np.put_along_axis(unsampled, draws, False, axis=1)
    for m in (None, mask, ~mask):
        keep = np.ones(30, dtype=bool) if m is None else m
        samples = (unsampled[:, keep] * p[keep] ** 2).sum(1)
        exact = expected_unsampled_second_moment(p, n, m)
        assert abs(samples.mean() - exact) < 5 * samples.std() / np.sqrt(trials) + 1e-12


def test_expected_unsampled_second_moment_shrinks_with_n():
    p = np.random.default_rng(0).dirichlet(np.ones(100))
    values = [expected_unsampled_second_moment(p, n) for n in (0, 1, 4, 16, 512, 51_200)]
    assert values[0] == pytest.approx(float((p**2).sum()))
    assert all(a > b for a, b in itertools.pairwise(values))
    assert expected_unsampled_second_moment(np.array([1.0, 0.0]), 3) == 0.0
    with pytest.raises(ValueError, match="non-negative integer"):
        expected_unsampled_second_moment(p, -1)


def test_pass_at_k_from_mass():
    assert pass_at_k_from_mass(0.5, 1) == pytest.approx(0.5)
    assert pass_at_k_from_mass(0.5, 3) == pytest.approx(0.875)
    assert pass_at_k_from_mass(1.0, 4) == 1.0
    assert pass_at_k_from_mass(0.0, 4) == 0.0
    np.testing.assert_allclose(pass_at_k_from_mass(np.array([0.1, 0.2]), 2), [0.19, 0.36])
    for bad_k in (0, -1, 1.5):
        with pytest.raises(ValueError, match="k must be"):
            pass_at_k_from_mass(0.3, bad_k)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pass_at_k_from_mass(1.2, 2)
