"""PNG figures of runs (matplotlib, Agg backend: no display needed): ``brorl report`` and ``brorl compare
--out``.

- :func:`plot_run_metrics`: training curves from ``metrics.jsonl`` (reward, dynamic-sampling pass rate, unseen
  mass, held-out pass@1), one figure per x axis (step, samples, wall time), one line per run. The x axes are
  those of the paper's comparisons: BroRL vs ProRL is judged at equal samples and equal hours, not equal
  steps.
- :func:`plot_task_trajectories`: per-task held-out pass@1 across checkpoints, one panel per task, one line
per
  run (the paper's per-task trajectory figure).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# What `brorl report` plots by default: the run's health (reward, filter pass rate), the theory's unsampled
# mass proxy, and the outcome (held-out pass@1). Definitions: docs/metrics.md.
DEFAULT_METRICS = ("reward/mean", "filter/pass_rate", "rollout/unseen_mass", "eval/pass@1")
X_LABELS = {"step": "training step", "samples": "generated samples (cumulative)", "wall_time": "wall time"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _time_scale(max_seconds: float) -> tuple[float, str]:
    if max_seconds > 7200:
        return 3600.0, "hours"
    if max_seconds > 120:
        return 60.0, "minutes"
    return 1.0, "seconds"


def series(rows: Sequence[dict[str, Any]], x: str, metric: str) -> tuple[list[float], list[float]]:
    """(x values, metric values) over the rows that log both as finite numbers, in file order."""
    xs, ys = [], []
    for row in rows:
        xv, yv = row.get(x), row.get(metric)
        if isinstance(xv, (int, float)) and isinstance(yv, (int, float)) and math.isfinite(yv):
            xs.append(float(xv))
            ys.append(float(yv))
    return xs, ys


def plot_run_metrics(
    runs: dict[str, Sequence[dict[str, Any]]],
    out_dir: Path,
    metrics: Sequence[str] = DEFAULT_METRICS,
    axes: Sequence[str] = ("step", "samples", "wall_time"),
) -> list[Path]:
    """One PNG per x axis, ``metrics_vs_<axis>.png``, with a panel per metric and a line per run.

    Args:
        runs: label -> rows of that run's metrics.jsonl.
        out_dir: created if needed.
        metrics: metric names; a panel whose metric no run logs says so instead of being left blank.
        axes: x coordinates among ``step``, ``samples``, ``wall_time``; an axis no run logs is skipped.

    Returns:
        the files written.
    """
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for axis in axes:
        if not any(series(rows, axis, axis)[0] for rows in runs.values()):
            continue
        scale, unit = (1.0, "")
        if axis == "wall_time":
            scale, unit = _time_scale(max(max(series(r, axis, axis)[0], default=0.0) for r in runs.values()))
        cols = min(len(metrics), 2)
        nrows = math.ceil(len(metrics) / cols)
        fig, grid = plt.subplots(nrows, cols, figsize=(6 * cols, 3.6 * nrows), squeeze=False)
        for ax, metric in zip(grid.flat, metrics, strict=False):
            _metric_panel(ax, runs, axis, metric, scale)
            ax.set_xlabel(X_LABELS.get(axis, axis) + (f" ({unit})" if unit else ""))
        for ax in list(grid.flat)[len(metrics) :]:
            ax.set_visible(False)
        fig.tight_layout()
        path = out_dir / f"metrics_vs_{axis}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _metric_panel(
    ax: Any, runs: dict[str, Sequence[dict[str, Any]]], axis: str, metric: str, scale: float
) -> None:
    drawn = False
    for label, rows in runs.items():
        xs, ys = series(rows, axis, metric)
        if xs:
            # eval metrics are logged every few steps: markers make the sparse points visible
            ax.plot([x / scale for x in xs], ys, marker="o" if len(xs) < 30 else None, ms=3, label=label)
            drawn = True
    ax.set_title(metric)
    ax.grid(alpha=0.3)
    if not drawn:
        ax.text(0.5, 0.5, f"{metric} not logged", ha="center", va="center", transform=ax.transAxes)
    elif len(runs) > 1:
        ax.legend(fontsize=8)


def plot_task_trajectories(
    runs: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]],
    path: Path,
    xlabel: str = "checkpoint",
    patterns: dict[str, str] | None = None,
) -> Path:
    """A grid of panels, one per task (union over runs, sorted), each with one pass@1 line per run.

    Args:
        runs: label -> task -> (x (T,), pass@1 (T,)).
        path: the PNG to write (its directory is created).
        patterns: optional task -> pattern name, shown in the panel title.
    """
    plt = _pyplot()
    tasks = sorted({t for traj in runs.values() for t in traj})
    if not tasks:
        raise ValueError("plot_task_trajectories: no task has a trajectory to plot")
    cols = min(4, len(tasks))
    nrows = math.ceil(len(tasks) / cols)
    fig, grid = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax, task in zip(grid.flat, tasks, strict=False):
        for label, traj in runs.items():
            if task in traj:
                ax.plot(traj[task][0], traj[task][1], marker="o", ms=3, label=label)
        title = task if not patterns or task not in patterns else f"{task}\n{patterns[task]}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("pass@1", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(grid.flat)[len(tasks) :]:
        ax.set_visible(False)
    grid.flat[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
