"""Advantage estimators: hand-computed cases, a readable loop against the vectorised code, stability at N = 512."""

from __future__ import annotations

import math

import pytest
import torch

from brorl.algo import ADVANTAGES, compute_advantages, whiten

# 2 prompts × 4 rollouts, rewards (1,0,0,0) and (1,1,1,1)
HAND_REWARDS = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
S6 = math.sqrt(6)
HAND = {
    # group mean 0.25: (0.75, -0.25, -0.25, -0.25); the all-correct group has no signal
    "dr-grpo": [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0],
    # leave-one-out: r - mean of the other three = 4/3 · (r - mean)
    "rloo": [1.0, -1 / 3, -1 / 3, -1 / 3, 0, 0, 0, 0],
    # unbiased std of (1,0,0,0) = sqrt((0.5625 + 3·0.0625)/3) = 0.5
    "grpo": [1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0],
    # centred values over the batch of 8: mean 0, variance 0.75/8, so 0.75/sqrt(0.09375) = sqrt(6)
    "reinforce++-baseline": [S6, -S6 / 3, -S6 / 3, -S6 / 3, 0, 0, 0, 0],
}


@pytest.mark.parametrize("estimator", sorted(HAND))
def test_hand_computed_advantages(estimator):
    adv, _ = compute_advantages(HAND_REWARDS, estimator)
    torch.testing.assert_close(adv, torch.tensor(HAND[estimator]), atol=1e-5, rtol=1e-5)


def _reference(rewards, estimator, token_counts):
    """A readable per-group, per-rollout loop."""
    B, N = rewards.shape
    out = []
    for b in range(B):
        group = [float(x) for x in rewards[b]]
        mean = sum(group) / N
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / (N - 1))
        for i in range(N):
            if estimator == "grpo":
                out.append((group[i] - mean) / (std + 1e-6))
            elif estimator == "rloo":
                out.append(group[i] - (sum(group) - group[i]) / (N - 1))
            else:
                out.append(group[i] - mean)
    if estimator == "reinforce++-baseline":
        w = [float(c) for c in token_counts.flatten()]
        m = sum(wi * x for wi, x in zip(w, out, strict=True)) / sum(w)
        sd = math.sqrt(sum(wi * (x - m) ** 2 for wi, x in zip(w, out, strict=True)) / sum(w))
        out = [(x - m) / (sd + 1e-6) for x in out]
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("estimator", sorted(ADVANTAGES))
@pytest.mark.parametrize(("B", "N", "seed"), [(1, 2, 0), (3, 5, 1), (8, 16, 2), (2, 64, 3)])
def test_vectorised_equals_reference_loop(estimator, B, N, seed):
    g = torch.Generator().manual_seed(seed)
    rewards = (torch.rand(B, N, generator=g) < 0.4).float() + 0.1 * torch.rand(B, N, generator=g)
    counts = torch.randint(1, 50, (B, N), generator=g)
    adv, metrics = compute_advantages(rewards, estimator, token_counts=counts)
    torch.testing.assert_close(adv.double(), _reference(rewards, estimator, counts), atol=1e-5, rtol=1e-5)
    assert metrics["adv/max_abs"] == pytest.approx(float(adv.abs().max()))


def test_one_success_in_512_is_about_sqrt_n_and_finite():
    # BRORL.md §7.6: the lone success among N = 512 binary rewards gets a whitened advantage of about √N
    rewards = torch.zeros(1, 512)
    rewards[0, 7] = 1.0
    adv, metrics = compute_advantages(rewards, "reinforce++-baseline")
    assert torch.isfinite(adv).all()
    assert adv[7].item() == pytest.approx(math.sqrt(511), rel=1e-4)  # exactly sqrt(N-1) for one success
    assert metrics["adv/max_abs"] == pytest.approx(math.sqrt(511), rel=1e-4)


def test_whitening_is_exact_for_large_alike_values():
    # float32 one-pass variance would lose these; two passes in float64 keep them
    x = torch.tensor([1e8 + 1.0, 1e8 - 1.0, 1e8 + 1.0, 1e8 - 1.0], dtype=torch.float64)
    white, stats = whiten(x)
    torch.testing.assert_close(
        white, torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64), atol=1e-6, rtol=0
    )
    assert stats["std"] == pytest.approx(1.0)


def test_whitening_with_all_reduce_matches_the_global_batch():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(12, generator=g), torch.randint(1, 9, (12,), generator=g)
    full, _ = whiten(x, w)
    # two "ranks" holding halves; all_reduce adds the other half's sums, as torch.distributed would
    halves = [(x[:6], w[:6]), (x[6:], w[6:])]

    def fake_all_reduce_for(rank):
        other_x, other_w = halves[1 - rank]
        calls = iter(range(2))

        def reduce(t):
            i = next(calls)
            if i == 0:
                return t + torch.stack([(other_w.double() * other_x.double()).sum(), other_w.double().sum()])
            mean = (w.double() * x.double()).sum() / w.double().sum()
            return t + (other_w.double() * (other_x.double() - mean) ** 2).sum().reshape(1)

        return reduce

    parts = [whiten(hx, hw, all_reduce=fake_all_reduce_for(r))[0] for r, (hx, hw) in enumerate(halves)]
    torch.testing.assert_close(torch.cat(parts), full)


def test_uniform_batch_gives_zero_advantages_not_nan():
    adv, _ = compute_advantages(torch.ones(4, 8), "reinforce++-baseline")
    assert torch.equal(adv, torch.zeros(32))


@pytest.mark.parametrize("estimator", sorted(ADVANTAGES))
def test_group_estimators_reject_n_equal_1(estimator):
    with pytest.raises(ValueError, match="at least 2 rollouts"):
        compute_advantages(torch.ones(4, 1), estimator)


def test_bad_input():
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'.*grpo"):
        compute_advantages(torch.ones(2, 4), "ppo")
    with pytest.raises(ValueError, match="NaN"):
        compute_advantages(torch.tensor([[1.0, float("nan")]]), "grpo")
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        compute_advantages(torch.ones(8), "grpo")
