"""Policy loss, KL, importance weights, aggregation, dynamic sampling and the LR rule on tiny hand cases."""

from __future__ import annotations

import math

import pytest
import torch

from brorl.algo import (
    aggregate,
    entropy_from_logits,
    informative_groups,
    kl_penalty,
    policy_loss,
    select_groups,
    sqrt_lr_rule,
    truncated_is_weights,
)
from brorl.algo.schedule import warmup_factor

LN = math.log

# (ratio, advantage, dual_clip, expected loss) with eps_low = 0.2, eps_high = 0.28
CLIP_CASES = [
    (1.5, 1.0, None, -1.28),  # positive A, ratio above 1 + ε_high: clipped, -min(1.5, 1.28)
    (1.1, 1.0, None, -1.1),  # inside the band: unclipped
    (0.5, 1.0, None, -0.5),  # positive A, ratio below 1 - ε_low: min picks the unclipped 0.5
    (0.5, -1.0, None, 0.8),  # negative A, low ratio: -min(-0.5, -0.8) = 0.8 (clipped)
    (1.5, -1.0, None, 1.5),  # negative A, high ratio: unclipped 1.5 (PPO's pessimism)
    (5.0, -1.0, 3.0, 3.0),  # dual clip caps the negative-advantage loss at c·|A| = 3
    (1.5, -1.0, 3.0, 1.5),  # below the cap: unchanged
    (5.0, 1.0, 3.0, -1.28),  # dual clip never touches positive advantages
]


@pytest.mark.parametrize(("ratio", "adv", "dual", "expected"), CLIP_CASES)
def test_clipped_surrogate_hand_cases(ratio, adv, dual, expected):
    logp = torch.tensor([[LN(ratio)]], requires_grad=True)
    loss, info = policy_loss(
        logp,
        torch.zeros(1, 1),
        torch.tensor([adv]),
        torch.ones(1, 1, dtype=torch.bool),
        eps_low=0.2,
        eps_high=0.28,
        dual_clip=dual,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert info["ratio"].item() == pytest.approx(ratio, rel=1e-6)


def test_clip_higher_lets_positive_tokens_rise_further_than_negative_ones_fall():
    # clip-higher's point: with ε_high > ε_low a positive-advantage token's ratio keeps its gradient up to 1 + ε_high
    logp = torch.tensor([[LN(1.25)]], requires_grad=True)
    loss, _ = policy_loss(
        logp,
        torch.zeros(1, 1),
        torch.tensor([1.0]),
        torch.ones(1, 1, dtype=torch.bool),
        eps_low=0.2,
        eps_high=0.28,
    )
    loss.sum().backward()
    assert logp.grad.item() == pytest.approx(-1.25)  # still inside the band: gradient flows
    logp2 = torch.tensor([[LN(1.25)]], requires_grad=True)
    loss2, _ = policy_loss(
        logp2,
        torch.zeros(1, 1),
        torch.tensor([1.0]),
        torch.ones(1, 1, dtype=torch.bool),
        eps_low=0.2,
        eps_high=0.2,
    )
    loss2.sum().backward()
    assert logp2.grad.item() == 0.0  # symmetric clipping stops it


def test_masked_tokens_contribute_nothing_and_is_weights_scale():
    logp = torch.zeros(1, 3, requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    w = torch.tensor([[1.0, 0.5, 9.0]])
    loss, _ = policy_loss(logp, torch.zeros(1, 3), torch.tensor([2.0]), mask, is_weights=w)
    assert loss.tolist() == [[-2.0, -1.0, 0.0]]


def _batch(seed, M=6, T=5):
    g = torch.Generator().manual_seed(seed)
    logp = (torch.randn(M, T, generator=g) * 0.1).requires_grad_(True)
    old = torch.randn(M, T, generator=g) * 0.1
    adv = torch.randn(M, generator=g)
    mask = torch.rand(M, T, generator=g) < 0.8
    return logp, old, adv, mask


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batch_size_does_not_change_the_gradient(mode):
    logp, old, adv, mask = _batch(0)
    loss, _ = policy_loss(logp, old, adv, mask)
    aggregate(loss, mask, mode).backward()
    full = logp.grad.clone()
    logp.grad = None
    num_tokens, num_seqs, max_len = mask.sum().item(), mask.shape[0], mask.shape[1]
    for rows in (slice(0, 1), slice(1, 4), slice(4, 6)):  # uneven micro-batches
        part, _ = policy_loss(logp[rows], old[rows], adv[rows], mask[rows])
        aggregate(
            part, mask[rows], mode, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len
        ).backward()
    torch.testing.assert_close(logp.grad, full)


def test_token_mean_weighs_every_valid_token_equally():
    loss = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(7 / 4)
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx((1 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx(7 / 6)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate(loss, mask, "mean")


def test_kl_estimators_hand_values():
    logp, ref = torch.tensor([LN(0.5)]), torch.tensor([LN(0.25)])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(LN(2))  # log π − log π_ref
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * LN(2) ** 2)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + LN(2) - 1)  # r − log r − 1, r = 0.5
    assert kl_penalty(torch.tensor([0.0]), torch.tensor([-100.0]), "k2", clamp=10.0).item() == 10.0
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_penalty(logp, ref, "k4")


def test_k3_is_an_unbiased_non_negative_kl_estimate():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=g), 0)
    q = torch.softmax(torch.randn(6, generator=g), 0)
    draws = torch.multinomial(p, 200_000, replacement=True, generator=g)
    est = kl_penalty(p.log()[draws], q.log()[draws], "k3", clamp=None)
    assert (est >= 0).all()
    assert est.mean().item() == pytest.approx((p * (p / q).log()).sum().item(), abs=0.01)


def test_truncated_is_weights_cap_and_mask():
    w = truncated_is_weights(
        torch.tensor([[0.0, 0.0, 0.0]]),
        torch.tensor([[0.0, -2.0, 1.0]]),
        torch.tensor([[True, True, False]]),
        cap=2.0,
    )
    assert w[0].tolist() == pytest.approx([1.0, 2.0, 0.0])


def test_entropy_of_uniform_logits():
    assert entropy_from_logits(torch.zeros(3, 4)).tolist() == pytest.approx([LN(4)] * 3)


def test_dynamic_sampling_keeps_only_mixed_groups_and_reports_surplus():
    rewards = torch.tensor([[1, 0, 0], [1, 1, 1], [0, 0, 0], [0, 1, 1], [0.5, 0.5, 1.0]], dtype=torch.float32)
    informative = informative_groups(rewards)
    assert informative.tolist() == [True, False, False, True, True]
    kept, surplus = select_groups(informative, 2)
    assert kept.tolist() == [0, 3] and surplus.tolist() == [4]


def test_sqrt_lr_rule_prorl_to_brorl():
    assert sqrt_lr_rule(1e-6, 128, 512, 512, 16) == pytest.approx(1e-6 * math.sqrt(8))
    assert sqrt_lr_rule(3e-4, 8, 16, 8, 16) == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="prompts"):
        sqrt_lr_rule(1e-6, 0, 512, 512, 16)
    assert [warmup_factor(s, 3) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
