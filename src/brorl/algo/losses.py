"""Policy losses, KL penalties, importance weights and loss aggregation, as pure tensor functions.

Shapes: M = sequences in a (micro-)batch, T = response tokens; ``mask`` (M, T) marks valid response tokens.

- ``policy_loss``: PPO's clipped surrogate with decoupled bounds ("clip-higher", DAPO / ProRL):
  −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A), ρ = exp(log π − log π_old), and optional dual clip (Ye et al. 2020) that
  caps the loss of negative-advantage tokens at −c·A.
- ``truncated_is_weights``: w = min(exp(log π_old − log π_rollout), C), the truncated importance sampling that
  corrects a mismatch between the rollout engine's and the trainer's numerics (Yao et al. 2025, "TIS").
- ``kl_penalty``: k1 / k2 / k3 estimators of KL(π ‖ π_ref) per token (Schulman 2020), clamped.
- ``aggregate``: named ways to reduce per-token losses. ``token-mean`` divides by the *global* number of valid
  tokens (pass ``num_tokens``), so splitting a batch into micro-batches does not change the summed gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "aggregate",
    "entropy_from_logits",
    "kl_penalty",
    "policy_loss",
    "truncated_is_weights",
]


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    dual_clip: float | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token clipped surrogate loss.

    Args:
        logp: (M, T) log π(token) under the policy being trained (carries the gradient).
        old_logp: (M, T) log π_old(token) of the policy that generated the data (no gradient).
        advantages: (M,) per sequence, or (M, T) per token.
        mask: (M, T) bool, valid response tokens.
        eps_low, eps_high: the ratio is clipped to [1 − eps_low, 1 + eps_high].
        dual_clip: c > 1 caps the loss of negative-advantage tokens at −c·A; None disables.
        is_weights: (M, T) truncated importance weights multiplying each token's loss (no gradient), or None.

    Returns:
        loss (M, T) with zeros at invalid tokens, and per-token diagnostics (M, T): ``clipped`` (bool), ``ratio``.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (it caps the loss at -c·A), got {dual_clip}")
    if eps_low < 0 or eps_high < 0 or eps_low >= 1:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {eps_low}, {eps_high}")
    adv = advantages[:, None] if advantages.ndim == 1 else advantages  # (M, 1) or (M, T)
    ratio = torch.exp(logp - old_logp.detach())  # (M, T)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)  # = -min(ρA, clip(ρ)A)
    if dual_clip is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * dual_clip), loss)
    if is_weights is not None:
        loss = loss * is_weights.detach()
    loss = torch.where(mask, loss, torch.zeros_like(loss))
    return loss, {"clipped": (clipped > unclipped) & mask, "ratio": ratio.detach()}


def truncated_is_weights(
    old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor, cap: float = 2.0
) -> torch.Tensor:
    """w = min(π_old / π_rollout, cap) per token, 0 where masked. (M, T), no gradient."""
    if cap <= 0:
        raise ValueError(f"the truncation cap must be positive, got {cap}")
    w = torch.exp((old_logp - rollout_logp).detach()).clamp(max=cap)
    return torch.where(mask, w, torch.zeros_like(w))


def _k1(logp, ref_logp):
    return logp - ref_logp


def _k2(logp, ref_logp):
    return 0.5 * (logp - ref_logp) ** 2


def _k3(logp, ref_logp):
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": _k1,
    "k2": _k2,
    "k3": _k3,
}


def kl_penalty(
    logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k2", clamp: float | None = 10.0
) -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from samples of π. (M, T) → (M, T).

    k1 = log π − log π_ref (unbiased, high variance, can be negative); k2 = ½(log π − log π_ref)² (its gradient is
    the true KL gradient at first order; NeMo-RL's ProRLv2 example uses it); k3 = π_ref/π − log(π_ref/π) − 1
    (unbiased, non-negative). ``clamp`` bounds each token's value to [−clamp, clamp] so one wild token cannot
    dominate the loss.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {kind!r}; choose one of {sorted(KL_ESTIMATORS)}")
    kl = KL_ESTIMATORS[kind](logp, ref_logp.detach())
    return kl.clamp(-clamp, clamp) if clamp is not None else kl


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dimension. (..., V) → (...)."""
    logz = torch.logsumexp(logits, dim=-1)
    return logz - (torch.softmax(logits, dim=-1) * logits).sum(-1)


def _token_mean(loss, mask, num_tokens, num_seqs, max_len):
    denom = mask.sum() if num_tokens is None else num_tokens
    return loss.sum() / max(float(denom), 1.0)


def _seq_mean_token_mean(loss, mask, num_tokens, num_seqs, max_len):
    per_seq = loss.sum(-1) / mask.sum(-1).clamp(min=1)
    denom = mask.shape[0] if num_seqs is None else num_seqs
    return per_seq.sum() / max(float(denom), 1.0)


def _seq_mean_token_sum_norm(loss, mask, num_tokens, num_seqs, max_len):
    denom = (mask.shape[0] if num_seqs is None else num_seqs) * (
        mask.shape[1] if max_len is None else max_len
    )
    return loss.sum() / max(float(denom), 1.0)


AGGREGATIONS = {
    "token-mean": _token_mean,  # ProRLv2 / DAPO: every valid token weighs the same across the global batch
    "seq-mean-token-mean": _seq_mean_token_mean,  # GRPO's original: each sequence weighs the same
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,  # Dr. GRPO: divide by a constant (sequences × max length)
}


def aggregate(
    loss: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """Reduce per-token losses (M, T) to a scalar.

    For micro-batch invariance pass the global denominators: ``num_tokens`` (valid tokens in the whole batch,
    all ranks) for ``token-mean``, ``num_seqs`` for the sequence modes, ``max_len`` for Dr. GRPO. The micro-batch
    losses then sum to the full-batch loss.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[mode](loss, mask, num_tokens, num_seqs, max_len)
