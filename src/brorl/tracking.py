"""Metric sinks of a run: ``metrics.jsonl``, TensorBoard event files, and Weights & Biases when installed.

Every logged metric is namespaced (``rollout/``, ``reward/``, ``filter/``, ``adv/``, ``loss/``, ``policy/``,
``perf/``, ``eval/``) and defined in docs/metrics.md. Each line of ``metrics.jsonl`` is one JSON object with
``step``, ``samples`` (cumulative generated samples), ``wall_time`` (seconds of training so far) and the metrics.

On resume the tracker drops the lines and TensorBoard events after the checkpoint's step, so a resumed run's
files read as if it had never stopped.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["Tracker", "read_metrics"]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None marks "not a number" in the file
    return value


class Tracker:
    """Writes metrics of rank 0; other ranks construct it with ``enabled=False`` and it does nothing."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "brorl",
        config: dict[str, Any] | None = None,
        resume_step: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self._truncate_after(resume_step)
        elif self.path.exists():
            self.path.unlink()  # a fresh run in an old directory starts a fresh file
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=purge)
        if wandb:
            try:
                import wandb as wb
            except ImportError as exc:
                raise RuntimeError("--wandb needs the wandb package: pip install 'brorl[wandb]'") from exc
            self._wandb = wb.init(
                project=wandb_project, dir=str(run_dir), config=config or {}, resume="allow"
            )

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = [
            line for line in self.path.read_text().splitlines() if line.strip() and _step_of(line) <= step
        ]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, self.path)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append one record; numbers go to TensorBoard and W&B too."""
        if not self.enabled:
            return
        record = {"step": step} | {k: _clean(v) for k, v in metrics.items()}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
        scalars = {
            k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, global_step=step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", -1))
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1 << 62  # an unreadable (half-written) line is dropped on resume


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of ``RUN_DIR/metrics.jsonl``; a torn last line (a crash mid-write) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
