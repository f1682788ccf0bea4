"""``brorl compare A B [--base BASE]``: is B better than A? (BroRL App. D / BRORL.md §5.)

    brorl compare runs/prorl/eval runs/brorl/eval --base results/base --out results/prorl_vs_brorl

A and B are evaluation directories written by ``brorl eval``, or series of them (a run's ``eval/`` directory,
or the run directory itself). Prints and optionally writes (``--out``): the one-tailed paired t-test of B > A
over shared instances, per-task deltas, knowledge shrinkage against ``--base``, and per-task trajectory
patterns with a figure when checkpoints over time are given. Rules and output format: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from brorl.config import ConfigError, add_dataclass_arguments, build, option

HELP = (
    "paired comparison of two evaluations: t-test, per-task deltas, knowledge shrinkage, trajectory patterns"
)


@dataclass(frozen=True)
class CompareConfig:
    """Options of ``brorl compare`` (thresholds of the rules in docs/evaluation.md)."""

    base: Path | None = option(
        None, help="evaluation of the starting model, for knowledge shrinkage and as x=0"
    )
    out: Path | None = option(
        None, help="write comparison.json, comparison.md, tasks.csv (and trajectories.png)"
    )
    x: str = option(
        "auto", help="trajectory x axis: auto (samples, else step), samples, step, wall_time, index"
    )
    confidence: float = option(0.95, help="level of the two-sided confidence interval of the mean difference")
    shrink_threshold: float = option(0.0, help="a pass-rate fall must exceed this to count as shrinkage")
    change_tol: float = option(0.01, help="a run improves (degrades) when last − first pass@1 >= (<= −) this")
    ahead_margin: float = option(
        0.0, help="B is ahead at a point when its pass@1 exceeds A's by more than this"
    )

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.shrink_threshold < 0 or self.change_tol < 0:
            raise ConfigError("shrink_threshold and change_tol must be >= 0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", type=Path, help="baseline: an evaluation directory or a series (run's eval/)")
    parser.add_argument("b", type=Path, help="candidate: an evaluation directory or a series")
    add_dataclass_arguments(parser, CompareConfig)


def run(args: argparse.Namespace) -> int:
    from brorl.eval.comparison import compare_dirs, comparison_markdown
    from brorl.eval.io import json_safe
    from brorl.eval.tables import to_csv

    cfg = build(CompareConfig, args, origin="compare")
    try:
        result = compare_dirs(
            args.a,
            args.b,
            cfg.base,
            x=cfg.x,
            confidence=cfg.confidence,
            shrink_threshold=cfg.shrink_threshold,
            change_tol=cfg.change_tol,
            ahead_margin=cfg.ahead_margin,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    text = comparison_markdown(result)
    print(text)
    if cfg.out is not None:
        cfg.out.mkdir(parents=True, exist_ok=True)
        (cfg.out / "comparison.json").write_text(json.dumps(json_safe(result), indent=2) + "\n")
        (cfg.out / "comparison.md").write_text(text)
        (cfg.out / "tasks.csv").write_text(to_csv(result["tasks"]))
        if "trajectories" in result:
            _plot(result, cfg.out / "trajectories.png")
        print(f"wrote {cfg.out}/")
    return 0


def _plot(result: dict, path: Path) -> None:
    from brorl.eval.plots import plot_task_trajectories

    traj = result["trajectories"]
    patterns = {row["task"]: row["pattern"] for row in result["patterns"]["tasks"]}
    plot_task_trajectories(
        {f"A: {result['a']['path']}": traj["a"], f"B: {result['b']['path']}": traj["b"]},
        path,
        xlabel=traj["x"],
        patterns=patterns,
    )
