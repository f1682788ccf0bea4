"""Builders that turn a ``TrainConfig`` into the trainer's parts: policy, tokenizer, engine, reward pool, data.

The only code besides the CLI that reads the config; the parts themselves take plain arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from brorl.config import ConfigError
from brorl.distributed import pick_device
from brorl.trainer.config import TrainConfig

__all__ = ["Components", "build_components", "load_task_problems", "pick_device", "resolve_model_path"]


@dataclass
class Components:
    model: Any
    tokenizer: Any
    engine: Any
    pool: Any
    train_problems: list
    eval_problems: list
    eval_prompts: list[str]
    model_path: Path


def resolve_model_path(model: str) -> Path:
    """'default' → the cached tiny default policy (built on first use); otherwise a model directory."""
    if model == "default":
        from brorl.default_policy import default_policy_path

        return default_policy_path(build_if_missing=True, quiet=False)
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"--model {model!r} is not a directory; give a Hugging Face model directory (save_pretrained) or "
            "'default' for the tiny CPU policy (weights are never downloaded)"
        )
    return path


def load_task_problems(tasks: str, size: int, seed: int) -> tuple[list, list]:
    """Training problems and the task specs for held-out evaluation. File sources have no held-out split here."""
    from brorl.data import load_problems
    from brorl.eval.runner import resolve_tasks

    path = Path(tasks).expanduser()
    if path.exists():
        problems, report = load_problems(path)
        if report.skipped:
            print(f"note: skipped {report.skipped} malformed rows of {path} ({report})")
        return problems, []
    from brorl.data import reasoning_gym_problems

    try:
        specs = resolve_tasks([t.strip() for t in tasks.split(",") if t.strip()])
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return reasoning_gym_problems(specs, size=size, split="train", seed=seed), specs


def build_components(cfg: TrainConfig, device: torch.device | None = None) -> Components:
    """The trainer's parts; ``device`` (default: from ``--device``) is the rank's device in distributed runs."""
    from brorl.data import format_prompt
    from brorl.eval.runner import heldout_problems
    from brorl.models import load_causal_lm, load_tokenizer
    from brorl.rewards import RewardPool
    from brorl.rollout import HFRolloutEngine

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = device if device is not None else pick_device(cfg.device)
    path = resolve_model_path(cfg.model)
    try:
        tokenizer = load_tokenizer(path)
        model = load_causal_lm(path).to(device)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    model.eval()  # dropout off for rollouts and updates alike (as verl / OpenRLHF)
    train, specs = load_task_problems(cfg.tasks, cfg.train_size, cfg.seed)
    evals = heldout_problems(specs, cfg.eval_instances, cfg.seed) if specs and cfg.eval_every else []
    prompts = [
        format_prompt(p, tokenizer, template=cfg.template, answer_format=cfg.answer_format) for p in evals
    ]
    engine = HFRolloutEngine(
        model, tokenizer, max_seqs=cfg.rollout_max_seqs, max_tokens=cfg.rollout_max_tokens
    )
    pool = RewardPool(
        cfg.reward_workers,
        timeout_s=cfg.reward_timeout_s,
        answer_format=cfg.answer_format,
        stop_penalty=cfg.stop_penalty,
        format_penalty=cfg.format_penalty,
    )
    return Components(model, tokenizer, engine, pool, train, evals, prompts, path)
