"""``brorl simulate``: the paper's token-level simulator (BroRL §4.1, Figure 3), and a Theorem 1 mode.

    brorl simulate                                    # the paper's sweep: 5 values of N, 1000 steps, 3 seeds
    brorl simulate --mode theorem --rollouts 4 64 1024 51200 --seeds 0 --steps 200
    brorl simulate --preset simulator-paper --steps 100 --out runs/sim

Writes OUT/metrics.csv (one row per n, seed, step), OUT/summary.json (final values per N with the spread across
seeds), OUT/config.json and OUT/figure.png, and prints a summary table. docs/simulator.md explains every option
and each choice the paper leaves open.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from brorl.config import ConfigError, add_dataclass_arguments, build, load_preset, option, to_dict

HELP = "run the token-level simulator of BroRL §4.1 (Figure 3), or check Theorem 1 step by step"

# Theorem mode takes plain gradient steps of (η/N)·p·(R − S_R); with p ~ 1e-4 per token, η must be large for
# the policy to move. 1e3 keeps the first-order prediction within ~2% of the real step at N = 4 (docs/simulator.md).
THEOREM_DEFAULT_LR = 1e3


@dataclass(frozen=True)
class SimulateConfig:
    """Options of ``brorl simulate``. Defaults are the paper's set-up (BRORL.md §3) or documented choices."""

    rollouts: list[int] = option(
        [4, 8, 16, 512, 51200], help="rollouts per step N, one run per value (paper)"
    )
    steps: int = option(1000, help="optimisation steps per run (paper: 1000)")
    seeds: list[int] = option([0, 1, 2], help="seeds; every N runs once per seed (our choice: 3)")
    vocab_size: int = option(128_000, help="vocabulary size V (paper: 128,000)")
    num_correct: int = option(10_000, help="number of correct tokens |P| (paper: 10,000)")
    init: Literal["seeded", "zero"] = option(
        "seeded", help="starting logits: 'seeded' (z=3 on P, one anchor token outside P at 5) or 'zero'"
    )
    correct_logit: float = option(3.0, help="seeded start: logit of every correct token (paper: 3)")
    anchor_logit: float = option(5.0, help="seeded start: logit of the anchor token, outside P (paper: 5)")
    mode: Literal["paper", "theorem"] = option(
        "paper",
        help="'paper': centred rewards, duplicates counted, AdamW; 'theorem': set semantics, plain gradient step, "
        "measured vs predicted ΔQ_pos",
    )
    lr: float | None = option(
        None, help=f"learning rate (default: 1e-3 in paper mode, {THEOREM_DEFAULT_LR:g} in theorem mode)"
    )
    beta1: float = option(0.9, help="AdamW β1 (PyTorch default; the paper does not say)")
    beta2: float = option(0.999, help="AdamW β2 (PyTorch default)")
    adam_eps: float = option(1e-8, help="AdamW ε (PyTorch default)")
    weight_decay: float = option(
        0.01, help="AdamW weight decay (PyTorch default 0.01; the paper does not say)"
    )
    r_correct: float = option(1.0, help="reward of a correct token R_c (paper: +1)")
    r_wrong: float = option(-1.0, help="reward of an incorrect token R_w (paper: -1)")
    dtype: Literal["auto", "float32", "float64"] = option(
        "auto", help="precision of the logits: auto = float32 in paper mode, float64 in theorem mode"
    )
    threads: int = option(0, help="torch CPU threads (0: torch's default)")
    out: Path = option(Path("runs/simulate"), help="output directory")
    plot: bool = option(True, help="write figure.png")
    progress: bool = option(True, help="show a progress bar")

    def __post_init__(self) -> None:
        if any(n < 1 for n in self.rollouts):
            raise ConfigError(f"--rollouts must be positive integers, got {self.rollouts}")
        if len(set(self.rollouts)) != len(self.rollouts) or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("--rollouts and --seeds must not repeat values")
        if self.steps < 0:
            raise ConfigError(f"--steps must be >= 0, got {self.steps}")
        if self.vocab_size < 2 or not 1 <= self.num_correct < self.vocab_size:
            raise ConfigError(
                f"need 1 <= --num-correct < --vocab-size (got {self.num_correct} and {self.vocab_size})"
            )
        if self.init == "seeded" and self.num_correct > self.vocab_size - 1:
            raise ConfigError(
                "the seeded start needs one token outside P for the anchor: lower --num-correct"
            )
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.r_correct < self.r_wrong:
            raise ConfigError(f"--r-correct ({self.r_correct}) must be >= --r-wrong ({self.r_wrong})")

    @property
    def effective_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-3 if self.mode == "paper" else THEOREM_DEFAULT_LR

    @property
    def effective_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "float32" if self.mode == "paper" else "float64"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", help="a TOML preset (name under brorl/configs or a path); flags override it"
    )
    add_dataclass_arguments(parser, SimulateConfig)


def run(args: argparse.Namespace) -> int:
    preset = load_preset(args.preset, section="simulate") if args.preset else None
    cfg = build(SimulateConfig, preset, args, origin="preset" if preset else "config")
    result = simulate_from_config(cfg)
    write_outputs(cfg, result)
    print_summary(cfg, result)
    return 0


def simulate_from_config(cfg: SimulateConfig):
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from brorl.theory.simulator import simulate

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    kwargs = dict(
        steps=cfg.steps,
        vocab_size=cfg.vocab_size,
        num_correct=cfg.num_correct,
        init=cfg.init,
        correct_logit=cfg.correct_logit,
        anchor_logit=cfg.anchor_logit,
        mode=cfg.mode,
        lr=cfg.effective_lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
        r_correct=cfg.r_correct,
        r_wrong=cfg.r_wrong,
        dtype=getattr(torch, cfg.effective_dtype),
    )
    runs = len(cfg.rollouts) * len(cfg.seeds)
    label = f"simulate ({cfg.mode}): {runs} runs × V={cfg.vocab_size:,}"
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not cfg.progress,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=cfg.steps)
        return simulate(cfg.rollouts, cfg.seeds, progress=lambda t: bar.update(task, completed=t), **kwargs)


def write_outputs(cfg: SimulateConfig, result) -> None:
    """metrics.csv, summary.json, config.json and (optionally) figure.png under ``cfg.out``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = result.rows()
    first = next(rows, None)
    with open(out / "metrics.csv", "w", newline="") as fh:
        if first is not None:
            writer = csv.DictWriter(fh, fieldnames=list(first))
            writer.writeheader()
            writer.writerow(first)
            writer.writerows(rows)
    config = to_dict(cfg) | {"lr": cfg.effective_lr, "dtype": cfg.effective_dtype}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    summary = {
        "mode": cfg.mode,
        "steps": cfg.steps,
        "seeds": cfg.seeds,
        "seconds": round(result.seconds, 3),
        "per_n": result.summary(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if cfg.plot:
        from brorl.theory.plots import plot_simulation

        plot_simulation(result, out / "figure.png")


def print_summary(cfg: SimulateConfig, result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"brorl simulate ({cfg.mode}, {cfg.steps} steps, seeds {cfg.seeds}); mean ± std over seeds"
    )
    cols = ["N", "Q_pos final", "ΔQ_pos", "improved correct %", "worst drop", "steps Q_pos fell %"]
    if cfg.mode == "theorem":
        cols.append("max |meas−pred|/|pred|")
    for c in cols:
        table.add_column(c, justify="right")
    for n, s in result.summary().items():
        row = [
            n,
            f"{s['q_pos']['mean']:.4f} ± {s['q_pos']['std']:.4f}",
            f"{s['q_pos_gain']['mean']:+.4f}",
            f"{100 * s['improved_frac']['mean']:.1f}",
            f"{s['worst_drop']['mean']:.2e}",
            f"{100 * s['frac_steps_q_pos_fell']['mean']:.1f}",
        ]
        if cfg.mode == "theorem":
            row.append(f"{s['max_rel_linearisation_error']['max']:.2e}")
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(
        f"{result.seconds:.1f} s; wrote {Path(cfg.out) / 'metrics.csv'}, summary.json"
        + (", figure.png" if cfg.plot else "")
    )
