"""Comparing evaluation directories: the engine behind ``brorl compare`` (statistics in
:mod:`brorl.eval.compare`).

    brorl compare RUN_A/eval RUN_B/eval --base BASE_EVAL

A and B are each an evaluation directory or a series of them (one run's checkpoints, ordered by step). The
*final* evaluation of each (the last of the series) is compared instance by instance: paired t-test of B > A
and per-task deltas. With ``base``, knowledge shrinkage of each final model against it. With a series on
either side, per-task trajectories and their patterns; the base, when given, is prepended to both trajectories
at x = 0 (both runs continue from it, as ProRL and BroRL continue from the same ProRLv2 checkpoint in the
paper).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from brorl.eval.compare import knowledge_shrinkage, pair_instances, paired_t_test, task_deltas, task_patterns
from brorl.eval.io import find_eval_series, read_eval_dir
from brorl.eval.tables import to_markdown

X_AXES = ("auto", "samples", "step", "wall_time", "index")

Trajectories = dict[str, tuple[list[float], list[float]]]  # task -> (x (T,), pass@1 (T,))


def load_series(path: Path) -> list[tuple[dict[str, Any], list[Any]]]:
    """(summary, records) for each evaluation directory of ``path``'s series, in step order."""
    return [read_eval_dir(p) for p in find_eval_series(Path(path))]


def progress(summary: dict[str, Any], key: str) -> float | None:
    """The checkpoint's ``step``, ``samples`` or ``wall_time`` recorded in an evaluation summary (None if not)."""
    return (summary.get("checkpoint") or {}).get(key)


def choose_x(summaries: list[dict[str, Any]], x: str) -> str:
    """The progress coordinate for trajectories: ``auto`` picks samples, else step, else index, whichever
    every
    evaluation in ``summaries`` records (samples is the paper's equal-compute axis)."""
    if x not in X_AXES:
        raise ValueError(f"unknown x axis {x!r}; choose one of {X_AXES}")
    if x != "auto":
        missing = [s.get("model") for s in summaries if x != "index" and progress(s, x) is None]
        if missing:
            raise ValueError(f"--x {x}: evaluations of {missing} do not record {x!r}; use --x index or auto")
        return x
    for key in ("samples", "step"):
        if all(progress(s, key) is not None for s in summaries):
            return key
    return "index"


def trajectories(summaries: list[dict[str, Any]], x: str, base: dict[str, Any] | None = None) -> Trajectories:
    """Per-task pass@1 over a series of evaluation summaries, against coordinate ``x`` (not ``auto``).

    ``base`` is prepended at x = 0 (index axis: the series then starts at 1) unless the series already starts
    at or before 0.
    """
    xs = [float(i) if x == "index" else float(progress(s, x)) for i, s in enumerate(summaries)]
    points = list(zip(xs, summaries, strict=True))
    if base is not None and xs[0] > 0:
        points.insert(0, (0.0, base))
    elif base is not None and x == "index":
        points = [(0.0, base)] + [(xv + 1, s) for xv, s in points]
    out: Trajectories = {}
    for xv, summary in points:
        for row in summary["tables"]["tasks"]:
            out.setdefault(row["name"], ([], []))
            out[row["name"]][0].append(xv)
            out[row["name"]][1].append(row["pass@1"])
    return out


def compare_dirs(
    a: Path,
    b: Path,
    base: Path | None = None,
    *,
    x: str = "auto",
    confidence: float = 0.95,
    shrink_threshold: float = 0.0,
    change_tol: float = 0.01,
    ahead_margin: float = 0.0,
) -> dict[str, Any]:
    """Everything ``brorl compare`` reports, as one JSON-ready dict (keys documented in
    docs/evaluation.md)."""
    series_a, series_b = load_series(a), load_series(b)
    (sum_a, rec_a), (sum_b, rec_b) = series_a[-1], series_b[-1]
    pairs = pair_instances(rec_a, rec_b)
    out: dict[str, Any] = {
        "a": {
            "path": str(a),
            "model": sum_a.get("model"),
            "checkpoints": len(series_a),
            "instances": len(rec_a),
        },
        "b": {
            "path": str(b),
            "model": sum_b.get("model"),
            "checkpoints": len(series_b),
            "instances": len(rec_b),
        },
        "shared_instances": len(pairs),
        "t_test": paired_t_test(
            [p.pass_rate for p, _ in pairs], [q.pass_rate for _, q in pairs], confidence
        ).to_dict(),
        "tasks": task_deltas(pairs),
    }
    base_sum = None
    if base is not None:
        base_sum, base_rec = read_eval_dir(find_eval_series(Path(base))[0])
        out["base"] = {"path": str(base), "model": base_sum.get("model")}
        out["shrinkage"] = {
            "threshold": shrink_threshold,
            "a": knowledge_shrinkage(base_rec, rec_a, shrink_threshold),
            "b": knowledge_shrinkage(base_rec, rec_b, shrink_threshold),
        }
    if len(series_a) > 1 or len(series_b) > 1:
        summaries_a, summaries_b = [s for s, _ in series_a], [s for s, _ in series_b]
        axis = choose_x(summaries_a + summaries_b, x)
        traj_a, traj_b = trajectories(summaries_a, axis, base_sum), trajectories(summaries_b, axis, base_sum)
        out["trajectories"] = {"x": axis, "a": traj_a, "b": traj_b}
        out["patterns"] = {
            "change_tol": change_tol,
            "ahead_margin": ahead_margin,
            "tasks": task_patterns(traj_a, traj_b, change_tol, ahead_margin),
        }
    return out


def _fmt(v: float, digits: int = 4) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"


def comparison_markdown(result: dict[str, Any]) -> str:
    """A readable Markdown report of :func:`compare_dirs`'s result."""
    t = result["t_test"]
    lines = [
        f"# Comparison: B = `{result['b']['path']}` vs A = `{result['a']['path']}`\n",
        f"Shared instances: {result['shared_instances']} (A has {result['a']['instances']}, "
        f"B has {result['b']['instances']}).\n",
        "## Paired t-test (one-tailed, H1: B > A, on per-instance pass@1)\n",
        f"- mean pass@1: A {_fmt(t['mean_a'])}, B {_fmt(t['mean_b'])}",
        f"- Δ = {_fmt(t['mean_diff'])}, {int(t['confidence'] * 100)}% CI [{_fmt(t['ci_low'])}, "
        f"{_fmt(t['ci_high'])}]",
        f"- t = {_fmt(t['t'])} (df {t['df']}), one-tailed p = {_fmt(t['p_one_tailed'])}\n",
        "## Per task (final checkpoints)\n",
        to_markdown(result["tasks"]),
    ]
    if "shrinkage" in result:
        s = result["shrinkage"]
        rows = [
            {"model": name, **{k: v for k, v in s[name].items() if k not in ("worst", "per_task")}}
            for name in ("a", "b")
        ]
        lines += [f"## Knowledge shrinkage against the base (fall > {s['threshold']})\n", to_markdown(rows)]
        by_task = {name: {r["task"]: r for r in s[name]["per_task"]} for name in ("a", "b")}
        empty = {"shrunk": 0, "max_drop": 0.0}
        per_task = [
            {
                "task": task,
                "a_shrunk": by_task["a"].get(task, empty)["shrunk"],
                "a_max_drop": by_task["a"].get(task, empty)["max_drop"],
                "b_shrunk": by_task["b"].get(task, empty)["shrunk"],
                "b_max_drop": by_task["b"].get(task, empty)["max_drop"],
            }
            for task in sorted(set(by_task["a"]) | set(by_task["b"]))
        ]
        lines += ["\nPer task:\n", to_markdown(per_task)]
    if "patterns" in result:
        p = result["patterns"]
        lines += [
            f"\n## Per-task patterns over checkpoints (x = {result['trajectories']['x']}, change_tol "
            f"{p['change_tol']}, ahead_margin {p['ahead_margin']})\n",
            to_markdown(p["tasks"]),
        ]
    return "\n".join(lines)
