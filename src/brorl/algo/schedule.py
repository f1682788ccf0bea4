"""Learning-rate rules: BroRL's square-root scaling and linear warm-up."""

from __future__ import annotations

import math

__all__ = ["sqrt_lr_rule", "warmup_factor"]


def sqrt_lr_rule(base_lr: float, prompts: int, rollouts: int, base_prompts: int, base_rollouts: int) -> float:
    """lr = lr_0 · sqrt(B·N / (B_0·N_0)) (BroRL §4): the learning rate grows with the square root of the samples
    per step. ProRL (B_0 = 512, N_0 = 16) → BroRL (B = 128, N = 512) multiplies it by √8 ≈ 2.83."""
    for name, v in (
        ("prompts", prompts),
        ("rollouts", rollouts),
        ("base_prompts", base_prompts),
        ("base_rollouts", base_rollouts),
    ):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    return base_lr * math.sqrt((prompts * rollouts) / (base_prompts * base_rollouts))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the learning rate at optimizer step ``step`` (0-based): linear from 1/(w+1) to 1, then 1."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / (warmup_steps + 1))
