"""Advantage estimators over groups of N rollouts (one group per prompt), as pure tensor functions.

``compute_advantages(rewards (B, N), estimator, ...) -> (B*N,)`` dispatches through ``ADVANTAGES``:

| key | per-rollout advantage | source |
|---|---|---|
| ``reinforce++-baseline`` | r − mean(group), then whitened over the global batch, weighted by valid tokens | ProRLv2, REINFORCE++ (Hu 2025) |
| ``grpo`` | (r − mean(group)) / (std(group) + ε), unbiased std | DeepSeekMath (Shao 2024) |
| ``rloo`` | r − mean of the other N − 1 rollouts = N/(N−1)·(r − mean) | Ahmadian 2024 |
| ``dr-grpo`` | r − mean(group), no std division | Dr. GRPO (Liu 2025) |

All statistics are taken in float64: with one success among N = 512 binary rewards the whitened advantage of that
rollout is about √N ≈ 22.6 (BRORL.md §7, point 6), and float32 group sums over 10⁵ rollouts lose digits.
Whitening needs global sums; pass ``all_reduce`` (sums a float64 tensor across ranks) in distributed runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

AllReduce = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["ADVANTAGES", "compute_advantages", "group_baseline", "whiten"]


def _check_groups(rewards: torch.Tensor, name: str, min_n: int) -> None:
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (B, N), got shape {tuple(rewards.shape)}")
    if rewards.shape[1] < min_n:
        raise ValueError(
            f"the {name} estimator needs at least {min_n} rollouts per prompt (N = {rewards.shape[1]}): "
            "a group baseline from one sample is the sample itself. Raise N or use another estimator."
        )
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or infinite values")


def group_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """r − mean(group). rewards: (B, N) → (B, N) float64."""
    r = rewards.double()
    return r - r.mean(dim=1, keepdim=True)


def whiten(
    values: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    eps: float = 1e-8,
    all_reduce: AllReduce | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(x − mean) / std over a global batch, each value weighted (e.g. by its number of valid tokens).

    Two passes (mean, then squared deviations) keep the variance exact when values are large and alike. A batch
    with no spread returns zeros rather than dividing by ~0.

    Args:
        values: (M,) per-sequence values.
        weights: (M,) non-negative weights; None = 1 each.
        all_reduce: sums a tensor across ranks (identity when None).
    """
    x = values.double().flatten()
    w = torch.ones_like(x) if weights is None else weights.double().flatten()
    reduce = all_reduce or (lambda t: t)
    totals = reduce(torch.stack([(w * x).sum(), w.sum()]))
    if totals[1] <= 0:
        return torch.zeros_like(x), {"mean": 0.0, "std": 0.0}
    mean = totals[0] / totals[1]
    var = reduce((w * (x - mean) ** 2).sum().reshape(1))[0] / totals[1]
    std = var.sqrt()
    if std <= eps:
        return torch.zeros_like(x), {"mean": float(mean), "std": float(std)}
    return (x - mean) / (std + eps), {"mean": float(mean), "std": float(std)}


def _reinforce_pp_baseline(rewards, token_counts, eps, all_reduce):
    _check_groups(rewards, "reinforce++-baseline", 2)
    centred = group_baseline(rewards).flatten()  # (B*N,)
    weights = None if token_counts is None else token_counts.flatten()
    adv, _ = whiten(centred, weights, eps=eps, all_reduce=all_reduce)
    return adv


def _grpo(rewards, token_counts, eps, all_reduce):
    _check_groups(rewards, "grpo", 2)
    r = rewards.double()
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + eps)).flatten()


def _rloo(rewards, token_counts, eps, all_reduce):
    _check_groups(rewards, "rloo", 2)
    n = rewards.shape[1]
    return (group_baseline(rewards) * (n / (n - 1))).flatten()


def _dr_grpo(rewards, token_counts, eps, all_reduce):
    _check_groups(rewards, "dr-grpo", 2)
    return group_baseline(rewards).flatten()


ADVANTAGES: dict[str, Callable[..., torch.Tensor]] = {
    "reinforce++-baseline": _reinforce_pp_baseline,
    "grpo": _grpo,
    "rloo": _rloo,
    "dr-grpo": _dr_grpo,
}


def compute_advantages(
    rewards: torch.Tensor,
    estimator: str = "reinforce++-baseline",
    *,
    token_counts: torch.Tensor | None = None,
    eps: float = 1e-6,
    all_reduce: AllReduce | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-rollout advantages, flattened prompt-major.

    Args:
        rewards: (B, N) scalar reward of each rollout.
        estimator: a key of ``ADVANTAGES``.
        token_counts: (B, N) valid response tokens per rollout, the whitening weights of reinforce++-baseline
            (token-level whitening, as ProRLv2); None weighs rollouts equally.
        eps: added to standard deviations.
        all_reduce: sums across ranks, for the global-batch whitening.

    Returns:
        advantages (B*N,) float32, and metrics ``adv/max_abs``, ``adv/mean``, ``adv/std``.
    """
    if estimator not in ADVANTAGES:
        raise ValueError(f"unknown advantage estimator {estimator!r}; choose one of {sorted(ADVANTAGES)}")
    adv = ADVANTAGES[estimator](rewards, token_counts, eps, all_reduce)
    metrics = {
        "adv/max_abs": float(adv.abs().max()) if adv.numel() else 0.0,
        "adv/mean": float(adv.mean()) if adv.numel() else 0.0,
        "adv/std": float(adv.std()) if adv.numel() > 1 else 0.0,
    }
    return adv.float(), metrics
