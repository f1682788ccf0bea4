"""Figures of the token-level simulator: Figure 3's three panels plus the unsampled term of Theorem 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_simulation(result, path: str | Path) -> Path:
    """Write a PNG: Q_pos, % of correct tokens improved, worst drop, and the unsampled term, against steps.

    One line per N (mean over seeds) with the min–max band across seeds. In theorem mode a fifth panel sets
    the measured ΔQ_pos of each step against Theorem 1's prediction.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    theorem = "measured_delta" in result.metrics
    panels = [
        ("q_pos", "Q_pos (mass on correct tokens)", "linear"),
        ("improved_frac", "correct tokens above their start (%)", "linear"),
        ("worst_drop", "worst drop of a correct token", "linear"),
        ("unsampled_term", "Theorem 1 unsampled term", "symlog"),
    ]
    fig, axes = plt.subplots(1, len(panels) + theorem, figsize=(4.2 * (len(panels) + theorem), 3.6))
    ns = sorted({n for n, _ in result.runs})
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(ns)))
    steps = np.arange(result.steps + 1)
    window = max(1, result.steps // 50)  # the batch terms are noisy step to step: show a rolling mean
    for ax, (key, title, scale) in zip(axes, panels, strict=False):
        plotted = []
        for n, color in zip(ns, colors, strict=True):
            rows = [r for r, (nn, _) in enumerate(result.runs) if nn == n]
            first = 1 if key == "unsampled_term" else 0  # batch metrics start at step 1
            vals = result.metrics[key][rows, first:] * (100 if key == "improved_frac" else 1)
            x = steps[first:]
            if scale == "symlog" and window > 1 and vals.shape[1] >= window:
                kernel = np.ones(window) / window
                vals = np.stack([np.convolve(v, kernel, mode="valid") for v in vals])
                x = x[window - 1 :]
            plotted.append(vals)
            ax.plot(x, vals.mean(axis=0), color=color, lw=1.2, label=f"N={n:,}")
            if len(rows) > 1:
                ax.fill_between(x, vals.min(axis=0), vals.max(axis=0), color=color, alpha=0.2)
        if scale == "symlog":
            mags = np.abs(np.concatenate([v.mean(axis=0) for v in plotted]))
            mags = mags[mags > 0]
            ax.set_yscale("symlog", linthresh=float(mags.min()) if mags.size else 1e-12)
            title += f" ({window}-step mean)" if window > 1 else ""
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if theorem:
        ax = axes[-1]
        for n, color in zip(ns, colors, strict=True):
            rows = [r for r, (nn, _) in enumerate(result.runs) if nn == n]
            pred = result.metrics["predicted_delta"][rows, 1:].ravel()
            meas = result.metrics["measured_delta"][rows, 1:].ravel()
            ax.scatter(pred, meas, s=3, color=color, label=f"N={n:,}")
        lim = np.nanmax(np.abs(result.metrics["predicted_delta"][:, 1:]))
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
        ax.set_title("ΔQ_pos per step: measured vs Theorem 1", fontsize=10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("measured")
        ax.grid(alpha=0.3)
    fig.suptitle(f"token-level simulator ({result.mode} mode)", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
