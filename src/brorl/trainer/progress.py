"""The live display of ``brorl train``: a progress bar with step, reward, filter pass rate, samples/s and ETA,
plus one printed line per step (so logs of non-interactive runs show progress too)."""

from __future__ import annotations

from typing import Any


class TrainProgress:
    def __init__(self, cfg: Any, *, start: int, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.cfg, self.console = cfg, console
        self.bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            disable=not cfg.progress,
        )
        self.task = self.bar.add_task("train", total=cfg.steps, completed=start, info="")

    def __enter__(self) -> TrainProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def update(self, step: int, m: dict[str, float]) -> None:
        info = (
            f"reward {m.get('reward/mean', float('nan')):.3f}  pass {m.get('filter/pass_rate', 0):.2f}  "
            f"{m.get('perf/samples_per_second', 0):.0f} samples/s"
        )
        if "eval/pass@1" in m:
            info += f"  held-out pass@1 {m['eval/pass@1']:.3f}"
        self.bar.update(self.task, completed=step, info=info)
        if not self.cfg.progress or not self.console.is_terminal:
            self.console.print(f"step {step}/{self.cfg.steps}  {info}")
