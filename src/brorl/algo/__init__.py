"""The ProRLv2 algorithm as pure tensor functions: advantages, policy losses, KL, dynamic sampling, LR rule.

Nothing here reads a config, a model or a file (STYLE.md habit 6); the trainer wires these together.
Shapes: B = prompts (groups), N = rollouts per prompt, T = response tokens; rollouts flattened prompt-major
(B*N, ...) so ``x.view(B, N, ...)`` recovers the groups.
"""

from brorl.algo.advantages import ADVANTAGES, compute_advantages, group_baseline, whiten
from brorl.algo.dynamic_sampling import informative_groups, select_groups
from brorl.algo.losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    aggregate,
    entropy_from_logits,
    kl_penalty,
    policy_loss,
    truncated_is_weights,
)
from brorl.algo.schedule import sqrt_lr_rule

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "aggregate",
    "compute_advantages",
    "entropy_from_logits",
    "group_baseline",
    "informative_groups",
    "kl_penalty",
    "policy_loss",
    "select_groups",
    "sqrt_lr_rule",
    "truncated_is_weights",
    "whiten",
]
