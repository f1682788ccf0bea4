"""``brorl report RUN_DIR [RUN_DIR ...]``: PNG plots of training runs from their metrics.jsonl.

    brorl report runs/brorl                       # writes runs/brorl/report/*.png
    brorl report runs/prorl runs/brorl --out results/report

Plots reward, dynamic-sampling pass rate, unseen mass and held-out pass@1 against steps, samples and wall time
(``metrics_vs_step.png``, ``metrics_vs_samples.png``, ``metrics_vs_wall_time.png``), one line per run, and
per-task held-out pass@1 across checkpoints (``task_trajectories.png``) from each run's ``eval/`` directories
or, failing that, its logged ``eval/pass@1/<task>`` metrics.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brorl.config import ConfigError, add_dataclass_arguments, build, option

HELP = "PNG plots of one or more training runs (reward, filter pass rate, unseen mass, held-out pass@1)"


@dataclass(frozen=True)
class ReportConfig:
    """Options of ``brorl report``."""

    out: Path | None = option(None, help="output directory; unset means FIRST_RUN/report")
    metrics: list[str] = option(
        default_factory=lambda: ["reward/mean", "filter/pass_rate", "rollout/unseen_mass", "eval/pass@1"],
        help="metrics.jsonl keys to plot, one panel each",
    )
    labels: list[str] | None = option(None, help="legend label per run; unset means the run directory names")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=Path, nargs="+", help="run directories holding metrics.jsonl")
    add_dataclass_arguments(parser, ReportConfig)


def run(args: argparse.Namespace) -> int:
    from brorl.eval.io import read_metrics_jsonl
    from brorl.eval.plots import plot_run_metrics, plot_task_trajectories

    cfg = build(ReportConfig, args, origin="report")
    labels = cfg.labels or _default_labels(args.runs)
    if len(labels) != len(args.runs):
        raise ConfigError(f"--labels gives {len(labels)} labels for {len(args.runs)} runs; give one per run")
    try:
        rows = {label: read_metrics_jsonl(run_dir) for label, run_dir in zip(labels, args.runs, strict=True)}
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    out = cfg.out or args.runs[0] / "report"
    written = plot_run_metrics(rows, out, cfg.metrics)
    traj = {
        label: _task_trajectories(run_dir, rows[label])
        for label, run_dir in zip(labels, args.runs, strict=True)
    }
    traj = {label: t for label, t in traj.items() if t}
    if traj:
        written.append(plot_task_trajectories(traj, out / "task_trajectories.png", xlabel="training step"))
    for path in written:
        print(path)
    if not written:
        print(f"nothing to plot: no run logs step, samples or wall_time in {[str(r) for r in args.runs]}")
        return 1
    return 0


def _default_labels(runs: list[Path]) -> list[str]:
    names = [r.resolve().name for r in runs]
    return names if len(set(names)) == len(names) else [str(r) for r in runs]


def _task_trajectories(
    run_dir: Path, rows: list[dict[str, Any]]
) -> dict[str, tuple[list[float], list[float]]]:
    """task -> (step, pass@1): from RUN/eval/step_* directories if any, else from eval/pass@1/<task>
    metrics."""
    from brorl.eval.comparison import load_series, progress, trajectories
    from brorl.eval.plots import series

    if (run_dir / "eval").is_dir():
        try:
            summaries = [s for s, _ in load_series(run_dir / "eval")]
        except ValueError:
            summaries = []
        if summaries and all(progress(s, "step") is not None for s in summaries):
            return trajectories(summaries, "step")
    prefix = "eval/pass@1/"
    tasks = sorted({k[len(prefix) :] for row in rows for k in row if k.startswith(prefix)})
    return {t: series(rows, "step", prefix + t) for t in tasks}
