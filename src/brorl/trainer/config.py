"""Options of ``brorl train``: one dataclass, each field with its help, the paper's value noted where it has one.

Presets in ``configs/`` (``tiny-cpu``, ``prorl-cpu``, ``brorl-paper``, ``prorl-paper``) set these keys under a
``[train]`` table with a provenance comment above every value; command-line flags override them. Invalid
combinations are rejected in ``__post_init__`` with what to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from brorl.config import ConfigError, option

GROUP_ESTIMATORS = ("reinforce++-baseline", "grpo", "rloo", "dr-grpo")


@dataclass(frozen=True)
class TrainConfig:
    """BroRL / ProRLv2 training options (docs/training.md)."""

    # --- policy and data
    model: str = option(
        "default",
        help="policy: a Hugging Face model directory, or 'default' (the tiny CPU policy, built on first use)",
    )
    tasks: str = option(
        "tiny-default",
        help="training tasks: a mixture name, comma-separated reasoning-gym task names, or a JSONL/Parquet/saved-dataset path",
    )
    train_size: int = option(
        2000, help="training problems generated per reasoning-gym mixture (file sources use all rows)"
    )
    answer_format: str = option("answer_tag", help="where the model puts its final answer (see docs/data.md)")
    template: Literal["auto", "plain", "chat"] = option(
        "auto",
        help="prompt template: 'chat' uses the tokenizer's chat template, 'plain' a text template, 'auto' chat when the tokenizer has one",
    )
    # --- rollouts
    rollouts: int = option(512, help="rollouts per prompt N (BroRL: 512; ProRL: 16)")
    prompts_per_step: int = option(
        2, help="prompts per step B after filtering (BroRL: 128, ProRL: 512 on 64 GPUs)"
    )
    max_new_tokens: int = option(48, help="longest response in tokens (paper: 16,384 context)")
    temperature: float = option(1.0, help="sampling temperature of training rollouts (ProRL v1: 1.2)")
    top_p: float = option(
        1.0,
        help="nucleus sampling for training rollouts (1: off; < 1 forces recomputed old log-probs and TIS)",
    )
    top_k: int = option(0, help="top-k for training rollouts (0: off)")
    rollout_max_seqs: int = option(1024, help="rollout engine budget: most sequences decoded at once")
    rollout_max_tokens: int = option(131072, help="rollout engine budget: most cached tokens at once")
    # --- rewards
    reward_workers: int = option(0, help="scoring worker processes (0: in-process, no timeouts)")
    reward_timeout_s: float = option(10.0, help="per-answer scoring timeout in seconds (with workers)")
    stop_penalty: float = option(
        0.0, help="reward penalty for responses cut off at max_new_tokens (ProRLv2 'stop properly'; 0: off)"
    )
    format_penalty: float = option(0.0, help="reward penalty when no answer can be extracted (0: off)")
    # --- dynamic sampling
    dynamic_sampling: bool = option(
        True, help="keep only groups with 0 < correct < N, refilling the batch (DAPO, ProRLv2)"
    )
    max_refill_rounds: int = option(
        4, help="extra generation rounds to fill a batch before going on with what there is"
    )
    keep_surplus: bool = option(
        True, help="keep surplus informative groups for the next step instead of discarding them"
    )
    max_surplus_age: int = option(
        2, help="drop kept groups older than this many steps (they grow off-policy)"
    )
    # --- advantages and loss
    advantage: Literal["reinforce++-baseline", "grpo", "rloo", "dr-grpo"] = option(
        "reinforce++-baseline", help="advantage estimator (ProRLv2: reinforce++-baseline)"
    )
    eps_low: float = option(0.2, help="PPO clip lower bound ε_low (ProRL: 0.2)")
    eps_high: float = option(
        0.28, help="PPO clip upper bound ε_high, clip-higher (ProRL v1: 0.4; NeMo-RL ProRLv2: 0.27-0.28)"
    )
    dual_clip: float | None = option(
        None, help="dual-clip constant c > 1 for negative advantages (none: off)"
    )
    loss_aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = option(
        "token-mean", help="loss aggregation (ProRLv2: token-mean over the global batch)"
    )
    mini_batches: int = option(
        1, help="optimizer steps per RL step; the batch is split by prompts (keep equal across arms)"
    )
    micro_batch_tokens: int = option(
        16384, help="token budget of one forward/backward (memory bound; does not change the gradient)"
    )
    old_logprobs: Literal["auto", "rollout", "recompute"] = option(
        "auto",
        help="old-policy log-probs: reuse the engine's ('rollout'), recompute with the trainer, or auto (reuse unless top-p/top-k truncate sampling)",
    )
    tis_cap: float = option(2.0, help="truncated importance sampling cap C when old log-probs are recomputed")
    # --- KL and entropy
    kl_coef: float = option(
        1e-4, help="KL penalty coefficient (NeMo-RL ProRLv2 example: 1e-4; 0: no reference model)"
    )
    kl_estimator: Literal["k1", "k2", "k3"] = option("k2", help="KL estimator (NeMo-RL ProRLv2: k2)")
    kl_clamp: float = option(10.0, help="clamp of each token's KL value")
    ref_reset_every: int = option(
        50, help="reset the reference policy to the current one every K steps (ProRLv2: 200-500; 0: never)"
    )
    entropy_coef: float = option(0.0, help="entropy bonus coefficient (0: off)")
    # --- optimisation
    lr: float = option(5e-5, help="base learning rate lr_0 (before the square-root rule)")
    lr_scaling: Literal["sqrt", "none"] = option(
        "sqrt", help="scale lr by sqrt(B·N / (B_0·N_0)) (BroRL's rule) or not"
    )
    base_prompts: int = option(8, help="B_0 of the square-root rule (default: the prorl-cpu arm)")
    base_rollouts: int = option(16, help="N_0 of the square-root rule (default: the prorl-cpu arm)")
    warmup_steps: int = option(0, help="linear learning-rate warm-up, in optimizer steps")
    weight_decay: float = option(0.0, help="AdamW weight decay (ProRL: 0.01)")
    adam_beta1: float = option(0.9, help="AdamW β1")
    adam_beta2: float = option(0.999, help="AdamW β2")
    adam_eps: float = option(
        1e-8, help="AdamW ε (PyTorch's default); gradients far below it barely move a weight"
    )
    grad_clip: float = option(1.0, help="gradient-norm clipping (0: off)")
    # --- run
    steps: int = option(160, help="RL steps")
    seed: int = option(0, help="seed of data order, sampling and initialisation")
    eval_every: int = option(
        20, help="held-out evaluation every K steps, and at the start and end (0: never)"
    )
    eval_instances: int = option(24, help="held-out instances per task")
    eval_samples: int = option(8, help="samples per held-out instance (paper: 16)")
    eval_temperature: float = option(0.6, help="held-out sampling temperature (paper: 0.6)")
    eval_top_p: float = option(0.95, help="held-out top-p (paper: 0.95)")
    checkpoint_every: int = option(10, help="checkpoint every K steps, and at the end")
    keep_checkpoints: int = option(3, help="checkpoints kept (0: all)")
    out: Path = option(Path("runs/train"), help="run directory (metrics.jsonl, tensorboard/, checkpoints/)")
    tensorboard: bool = option(True, help="write TensorBoard event files")
    wandb: bool = option(False, help="log to Weights & Biases (needs the wandb package)")
    progress: bool = option(True, help="show a live progress display")
    threads: int = option(0, help="torch CPU threads (0: torch's default)")
    device: str = option("auto", help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")
    sharding: Literal["none", "fsdp"] = option(
        "none",
        help="multi-process runs: 'none' keeps a full copy of the model and optimizer on every rank; 'fsdp' shards "
        "parameters, gradients, AdamW state and the reference across ranks (FSDP2; docs/distributed.md)",
    )

    def __post_init__(self) -> None:
        positive = (
            "rollouts",
            "prompts_per_step",
            "max_new_tokens",
            "mini_batches",
            "micro_batch_tokens",
            "base_prompts",
            "base_rollouts",
            "train_size",
            "eval_samples",
            "eval_instances",
            "rollout_max_seqs",
            "rollout_max_tokens",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0:
            raise ConfigError(f"--steps must be >= 0, got {self.steps}")
        if self.rollouts < 2 and self.advantage in GROUP_ESTIMATORS:
            raise ConfigError(
                f"--rollouts 1 cannot work with the group estimator {self.advantage!r}: its baseline is the group "
                "mean, which equals the single sample. Use --rollouts >= 2."
            )
        if self.prompts_per_step % self.mini_batches:
            raise ConfigError(
                f"--prompts-per-step ({self.prompts_per_step}) must be divisible by --mini-batches "
                f"({self.mini_batches}) so every optimizer step sees the same number of prompts"
            )
        if not 0 <= self.eps_low < 1 or self.eps_high < 0:
            raise ConfigError(
                f"need 0 <= --eps-low < 1 and --eps-high >= 0, got {self.eps_low}, {self.eps_high}"
            )
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ConfigError(f"--dual-clip must be > 1 (or none), got {self.dual_clip}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if not (self.adam_eps > 0 and math.isfinite(self.adam_eps)):
            raise ConfigError(f"--adam-eps must be positive (PyTorch's default is 1e-8), got {self.adam_eps}")
        if self.temperature <= 0:
            raise ConfigError(
                "--temperature must be > 0 for training rollouts (greedy rollouts have no exploration)"
            )
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.old_logprobs == "rollout" and (self.top_p < 1 or self.top_k > 0):
            raise ConfigError(
                "--old-logprobs rollout is wrong with --top-p < 1 or --top-k > 0: the engine's log-probs are of the "
                "truncated distribution, the trainer's are not. Use --old-logprobs recompute (or auto)."
            )
        for name in (
            "kl_coef",
            "entropy_coef",
            "weight_decay",
            "grad_clip",
            "stop_penalty",
            "format_penalty",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")

    @property
    def reuse_rollout_logprobs(self) -> bool:
        """Whether the engine's log-probs can stand for the old policy's (same distribution, same numerics)."""
        if self.old_logprobs == "auto":
            return self.top_p >= 1 and self.top_k == 0
        return self.old_logprobs == "rollout"

    @property
    def effective_lr(self) -> float:
        """lr_0, times sqrt(B·N / (B_0·N_0)) under the square-root rule."""
        if self.lr_scaling == "none":
            return self.lr
        from brorl.algo import sqrt_lr_rule

        return sqrt_lr_rule(
            self.lr, self.prompts_per_step, self.rollouts, self.base_prompts, self.base_rollouts
        )
