"""``brorl train``: RL with verifiable rewards, BroRL-style (many rollouts per prompt), ProRLv2 algorithm.

    brorl train                                   # N = 512 on the tiny default policy, CPU, ~15 minutes
    brorl train --preset prorl-cpu --out runs/prorl
    brorl train --model path/to/hf-model --tasks gsm_symbolic,basic_arithmetic --rollouts 256
    brorl train --resume runs/train               # continue exactly where a stopped or killed run left off
    torchrun --nproc_per_node 8 -m brorl train --preset brorl-paper ...   # 8 ranks (docs/distributed.md)

Every option: ``brorl train --help`` and docs/training.md. Presets: configs/*.toml (``[train]`` tables).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brorl.config import ConfigError, add_dataclass_arguments, build, load_preset, to_dict

HELP = "train a policy with BroRL / ProRLv2 (RL with verifiable rewards, N rollouts per prompt)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from brorl.trainer.config import TrainConfig

    parser.add_argument(
        "--preset", help="a TOML preset with a [train] table: a name under configs/ or a path"
    )
    parser.add_argument(
        "--resume",
        type=Path,
        help="a run directory to continue from its newest checkpoint; "
        "its saved options apply, flags given here override them (e.g. --steps to extend)",
    )
    add_dataclass_arguments(parser, TrainConfig)


def resolve_config(args: argparse.Namespace):
    """Defaults < preset (or the resumed run's saved options) < flags."""
    from brorl.trainer.config import TrainConfig

    base = None
    if args.resume is not None:
        saved = Path(args.resume) / "config.json"
        if not saved.is_file():
            raise ConfigError(f"--resume {args.resume}: no config.json there; is it a brorl run directory?")
        base = json.loads(saved.read_text())
        base["out"] = str(args.resume)
    elif args.preset:
        base = load_preset(args.preset, section="train")
    return build(TrainConfig, base, args, origin="preset" if args.preset else "config")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from brorl.distributed import launch_env
    from brorl.trainer import Trainer
    from brorl.trainer.progress import TrainProgress

    cfg = resolve_config(args)
    env = launch_env()  # checks a torchrun environment before anything is written
    rank = env.rank
    _check_world(cfg, env.world_size)
    console = Console(quiet=rank != 0)  # rank 0 speaks for the job
    out = Path(cfg.out)
    if args.resume is None and (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise ConfigError(
            f"{out} already holds a run; continue it with --resume {out} or choose another --out"
        )
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    dist = _init_distributed(cfg)
    console.print(
        f"[bold]brorl train[/]: N={cfg.rollouts}, B={cfg.prompts_per_step}, steps={cfg.steps}, "
        f"lr={cfg.effective_lr:.3g} ({cfg.lr_scaling} rule), out={out}"
        + (f", {dist.world_size} ranks ({dist.device.type})" if dist.enabled else "")
    )
    try:
        trainer = Trainer(cfg, resume=args.resume, console=console, dist=dist)
        try:
            with TrainProgress(cfg, start=trainer.step, console=console) as progress:
                trainer.run(on_step=progress.update)
        finally:
            trainer.close()
    finally:
        dist.close()
    console.print(
        f"done: {trainer.step} steps, {trainer.samples:,} samples, {trainer.wall:.0f} s; "
        f"metrics in {out / 'metrics.jsonl'}, checkpoints in {out / 'checkpoints'}"
    )
    return 0


def _check_world(cfg, world: int) -> None:
    """Settings that depend on the number of ranks, checked before anything is written or any group opens."""
    if cfg.prompts_per_step % world:
        raise ConfigError(
            f"--prompts-per-step ({cfg.prompts_per_step}) must be divisible by the number of ranks ({world}) so "
            "every rank trains on the same number of prompts; change one of them"
        )
    if cfg.sharding == "fsdp" and world < 2:
        raise ConfigError(
            "--sharding fsdp shards the model across processes and needs at least 2: launch with "
            "torchrun --nproc_per_node K (K >= 2), or use --sharding none for one process"
        )


def _init_distributed(cfg):
    """Join the torchrun job, if any."""
    from brorl.distributed import init_distributed

    return init_distributed(cfg.device)
