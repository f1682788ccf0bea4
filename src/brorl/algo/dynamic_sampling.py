"""Dynamic sampling decisions (DAPO; ProRLv2): which groups carry a learning signal, and which to keep.

A group whose N rollouts are all correct or all wrong has zero advantage under every group-baseline estimator, so
it only costs compute. These functions decide; the trainer owns the buffer of surplus groups and the refill loop.
"""

from __future__ import annotations

import torch

__all__ = ["informative_groups", "select_groups"]


def informative_groups(rewards: torch.Tensor, *, atol: float = 1e-9) -> torch.Tensor:
    """(B, N) rewards → (B,) bool: True where the rewards of a group are not all equal.

    With binary rewards this is 0 < #correct < N; with fractional rewards (code tests) any spread counts.
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (B, N), got shape {tuple(rewards.shape)}")
    r = rewards.double()
    return (r.max(dim=1).values - r.min(dim=1).values) > atol


def select_groups(informative: torch.Tensor, needed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Take the first ``needed`` informative groups, in order; the other informative ones are surplus.

    Returns (kept indices, surplus indices), both into the B groups. Uninformative groups are in neither.
    """
    if needed < 0:
        raise ValueError(f"needed must be >= 0, got {needed}")
    idx = informative.nonzero().flatten()
    return idx[:needed], idx[needed:]
