"""Evaluation directories and run directories on disk (the format is described in docs/evaluation.md).

An *evaluation directory* (written by ``brorl eval``)::

    summary.json      {"format": "brorl-eval/1", "model", "checkpoint": {"step", "samples", "wall_time"}, "config",
                       "ks", "tables": {"all", "macro", "tasks", "categories"}, "metrics"}
    instances.jsonl   one InstanceResult per line (uid, task, category, samples, correct, distinct_answers,
    ...) tasks.csv, categories.csv, results.md

A *series* is several evaluation directories of one run's checkpoints: a directory whose sub-directories are
evaluation directories (``RUN_DIR/eval/step_000100/``, ...), or a run directory holding such an ``eval/``.
Series are ordered by ``step`` (then directory name).

A *run directory* (written by the trainer) holds ``metrics.jsonl``: one JSON object per logged step.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brorl.eval.passk import InstanceResult, aggregate, macro_row, summary_metrics
from brorl.eval.tables import to_csv, to_markdown

FORMAT = "brorl-eval/1"
SUMMARY = "summary.json"
INSTANCES = "instances.jsonl"
STEP_DIR = re.compile(r"step_(\d+)$")


def _atomic_write(path: Path, text: str) -> None:
    # write-then-rename so a reader (compare, report) never sees half a file
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def json_safe(value: Any) -> Any:
    """NaN/inf are not JSON; store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def build_summary(
    records: Sequence[InstanceResult], ks: Sequence[int], meta: dict[str, Any]
) -> dict[str, Any]:
    """The summary of an evaluation: ``meta`` (model, step, samples, config, ...) plus tables and metrics."""
    tasks = aggregate(records, ks, by="task")
    return {
        "format": FORMAT,
        **meta,
        "ks": list(ks),
        "tables": {
            "all": aggregate(records, ks, by="all")[0],
            "macro": macro_row(tasks),
            "tasks": tasks,
            "categories": aggregate(records, ks, by="category"),
        },
        "metrics": summary_metrics(records, ks),
    }


def write_eval_dir(
    out: Path, records: Sequence[InstanceResult], ks: Sequence[int], meta: dict[str, Any]
) -> dict[str, Any]:
    """Write an evaluation directory (created if needed) and return its summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(records, ks, meta)
    tables = summary["tables"]
    _atomic_write(out / INSTANCES, "".join(json.dumps(r.to_dict()) + "\n" for r in records))
    _atomic_write(out / "tasks.csv", to_csv([*tables["tasks"], tables["macro"], tables["all"]]))
    _atomic_write(out / "categories.csv", to_csv(tables["categories"]))
    _atomic_write(out / "results.md", results_markdown(summary))
    _atomic_write(out / SUMMARY, json.dumps(json_safe(summary), indent=2) + "\n")
    return summary


def results_markdown(summary: dict[str, Any]) -> str:
    """A Markdown report of one evaluation: settings, the per-task and per-category tables (pass@k in %)."""
    tables = summary["tables"]
    pct = [f"pass@{k}" for k in [1, *summary["ks"]]]
    cfg = summary.get("config", {})
    head = f"# Evaluation of `{summary.get('model', '?')}`\n\n"
    settings = ", ".join(f"{k}={cfg[k]}" for k in sorted(cfg) if not isinstance(cfg[k], (dict, list)))
    return (
        head
        + (f"Settings: {settings}\n\n" if settings else "")
        + "pass@k in %, mean over instances of the unbiased estimator; `macro` is the mean over tasks.\n\n"
        + "## Per task\n\n"
        + to_markdown([*tables["tasks"], tables["macro"], tables["all"]], percent=pct)
        + "\n## Per category\n\n"
        + to_markdown(tables["categories"], percent=pct)
    )


def is_eval_dir(path: Path) -> bool:
    return (Path(path) / SUMMARY).is_file() and (Path(path) / INSTANCES).is_file()


def read_eval_dir(path: Path) -> tuple[dict[str, Any], list[InstanceResult]]:
    """(summary, instance records) of an evaluation directory."""
    path = Path(path)
    if not is_eval_dir(path):
        raise ValueError(
            f"{path} is not an evaluation directory (needs {SUMMARY} and {INSTANCES}); create one with "
            f"`brorl eval --model MODEL_DIR --out {path}`"
        )
    summary = json.loads((path / SUMMARY).read_text())
    if summary.get("format") != FORMAT:
        raise ValueError(f"{path / SUMMARY}: format {summary.get('format')!r} is not {FORMAT!r}")
    records = []
    for lineno, line in enumerate((path / INSTANCES).read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(InstanceResult.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, ValueError) as exc:
                raise ValueError(f"{path / INSTANCES}:{lineno}: bad instance record: {exc}") from exc
    return summary, records


def find_eval_series(path: Path) -> list[Path]:
    """Evaluation directories under ``path``, ordered by step: ``[path]`` itself if it is one, else its
    sub-directories that are (looking inside ``path/eval`` for a run directory).

    Raises:
        ValueError: if none is found.
    """
    path = Path(path)
    if is_eval_dir(path):
        return [path]
    for root in (path, path / "eval"):
        subs = [p for p in sorted(root.iterdir()) if p.is_dir() and is_eval_dir(p)] if root.is_dir() else []
        if subs:
            return sorted(subs, key=_series_key)
    raise ValueError(
        f"no evaluation directory at {path} (nor in its sub-directories or {path / 'eval'}); "
        "create them with `brorl eval`"
    )


def _series_key(path: Path) -> tuple[float, str]:
    step = (json.loads((path / SUMMARY).read_text()).get("checkpoint") or {}).get("step")
    if step is None:
        m = STEP_DIR.search(path.name)
        step = int(m.group(1)) if m else math.inf
    return (float(step), path.name)


def read_metrics_jsonl(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``RUN_DIR/metrics.jsonl`` in file order. A torn last line (run still writing) is
    skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} not found: `brorl report` needs a run directory written by `brorl train`")
    lines = path.read_text().splitlines()
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if lineno == len(lines):
                break
            raise ValueError(f"{path}:{lineno}: not a JSON object: {exc}") from exc
    return rows


def checkpoint_progress(model_dir: Path) -> dict[str, Any]:
    """``step``, ``samples`` and ``wall_time`` of a checkpoint ``RUN/checkpoints/step_000123``, read from the
    run's
    metrics.jsonl (the last row with that step); empty values when the model is not a run checkpoint."""
    model_dir = Path(model_dir)
    m = STEP_DIR.search(model_dir.name)
    out: dict[str, Any] = {"step": int(m.group(1)) if m else None, "samples": None, "wall_time": None}
    run_dir = model_dir.parent.parent
    if m and model_dir.parent.name == "checkpoints" and (run_dir / "metrics.jsonl").is_file():
        for row in read_metrics_jsonl(run_dir):
            if row.get("step") == out["step"]:
                out["samples"], out["wall_time"] = row.get("samples"), row.get("wall_time")
    return out


def default_eval_out(model_dir: Path) -> Path | None:
    """``RUN/eval/step_000123`` for a run checkpoint ``RUN/checkpoints/step_000123``; else None."""
    model_dir = Path(model_dir)
    if STEP_DIR.search(model_dir.name) and model_dir.parent.name == "checkpoints":
        return model_dir.parent.parent / "eval" / model_dir.name
    return None
