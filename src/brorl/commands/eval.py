"""``brorl eval``: held-out pass@1 (averaged over k samples) and unbiased pass@k of a saved model (BroRL App.
D).

    brorl eval --model RUN/checkpoints/step_000100                  # writes RUN/eval/step_000100/
    brorl eval --model DIR --tasks tiny-default gcd --instances 100 --out results/base

Samples ``--samples`` responses per held-out instance (paper: 16 at temperature 0.6, top-p 0.95), scores them,
and writes an evaluation directory (summary.json, instances.jsonl, tasks.csv, categories.csv, results.md;
format in docs/evaluation.md) that ``brorl compare`` and ``brorl report`` read.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from brorl.config import ConfigError, add_dataclass_arguments, build, load_preset, option, to_dict

HELP = "evaluate a saved model on held-out instances: pass@1 over k samples, pass@k, per task and category"


@dataclass(frozen=True)
class EvalConfig:
    """Options of ``brorl eval``."""

    tasks: list[str] = option(
        default_factory=lambda: ["tiny-default"],
        help="mixtures (brorl.data.MIXTURES) or reasoning-gym task names to evaluate on",
    )
    instances: int = option(
        50, help="held-out instances per task (fewer when a task has fewer distinct questions)"
    )
    samples: int = option(
        16, help="samples per instance: the k of 'pass@1 averaged over k samples' (paper: 16)"
    )
    ks: list[int] = option(default_factory=lambda: [1, 2, 4, 8, 16], help="k values of the unbiased pass@k")
    temperature: float = option(0.6, help="sampling temperature (paper App. D: 0.6)")
    top_p: float = option(0.95, help="nucleus sampling top-p (paper App. D: 0.95)")
    max_new_tokens: int = option(256, help="most response tokens per sample (the paper uses 16k contexts)")
    seed: int = option(
        0, help="seed of the held-out draw and of sampling; same seed, same instances and samples"
    )
    template: str = option(
        "auto", help="prompt template: plain, chat or auto (use what the model was trained on)"
    )
    answer_format: str = option("answer_tag", help="where the answer goes: answer_tag, boxed, last_line, raw")
    score_workers: int = option(1, help="scoring worker processes; 0 scores in-process (no timeouts)")
    prompts_per_call: int = option(8, help="instances per generate call (progress granularity)")
    dtype: Literal["float32", "bfloat16", "float16"] = option("float32", help="model weights dtype")
    out: Path | None = option(
        None, help="output directory; unset means RUN/eval/step_X for a checkpoint RUN/checkpoints/step_X"
    )

    def __post_init__(self) -> None:
        if self.instances < 1 or self.samples < 1 or self.prompts_per_call < 1:
            raise ConfigError("instances, samples and prompts_per_call must all be >= 1")
        if self.score_workers < 0:
            raise ConfigError(f"score_workers must be >= 0 (0 = in-process), got {self.score_workers}")
        too_big = [k for k in self.ks if not 1 <= k <= self.samples]
        if too_big:
            raise ConfigError(
                f"ks {too_big} must lie in [1, samples={self.samples}]: pass@k needs at least k samples per "
                "instance; raise --samples or drop those k"
            )
        if not self.tasks:
            raise ConfigError("tasks is empty: give at least one mixture or task name")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="a saved Hugging Face model directory")
    parser.add_argument("--preset", default=None, help="a TOML preset (its [eval] section) of these options")
    add_dataclass_arguments(parser, EvalConfig)


def run(args: argparse.Namespace) -> int:
    from brorl.eval.io import checkpoint_progress, default_eval_out, write_eval_dir

    cfg = build(EvalConfig, load_preset(args.preset, "eval") if args.preset else None, args, origin="eval")
    out = cfg.out or default_eval_out(args.model)
    if out is None:
        raise ConfigError(f"--out is required: {args.model} is not a run checkpoint (RUN/checkpoints/step_X)")
    t0 = time.perf_counter()
    records, prompts_sample = _evaluate(args.model, cfg)
    meta = {
        "model": str(args.model),
        "checkpoint": checkpoint_progress(args.model),
        "config": to_dict(cfg),
        "seconds": time.perf_counter() - t0,
        "prompt_example": prompts_sample,
    }
    summary = write_eval_dir(Path(out), records, cfg.ks, meta)
    _print_summary(summary, Path(out))
    return 0


def _evaluate(model_dir: Path, cfg: EvalConfig):
    """Load the model, draw the held-out problems, sample and score: (records, one example prompt)."""
    from rich.progress import Progress

    from brorl.data import format_prompt
    from brorl.eval.runner import evaluate_problems, heldout_problems, resolve_tasks
    from brorl.models.loading import load_causal_lm, load_tokenizer
    from brorl.rollout.engine import HFRolloutEngine
    from brorl.rollout.types import SamplingParams

    try:
        specs = resolve_tasks(cfg.tasks)
        tokenizer = load_tokenizer(model_dir)
        model = load_causal_lm(model_dir, dtype=cfg.dtype)
        problems = heldout_problems(specs, cfg.instances, cfg.seed)
        prompts = [
            format_prompt(p, tokenizer, template=cfg.template, answer_format=cfg.answer_format)
            for p in problems
        ]
        params = SamplingParams(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    engine = HFRolloutEngine(model, tokenizer)
    scorer = _build_scorer(cfg)
    try:
        with Progress(transient=True) as progress:
            bar = progress.add_task(f"eval {len(problems)} instances × {cfg.samples}", total=len(problems))
            records = evaluate_problems(
                problems,
                prompts,
                engine,
                scorer,
                cfg.samples,
                params,
                prompts_per_call=cfg.prompts_per_call,
                on_progress=lambda k: progress.advance(bar, k),
            )
    finally:
        _close(scorer)
    return records, prompts[0]


def _build_scorer(cfg: EvalConfig):
    """The rewards package's scoring pool: per-answer timeouts, each distinct answer of a group scored once."""
    from brorl.rewards import RewardPool

    return RewardPool(workers=cfg.score_workers, answer_format=cfg.answer_format)


def _close(scorer) -> None:
    close = getattr(scorer, "close", None)
    if close is not None:
        close()


def _print_summary(summary: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    tables = summary["tables"]
    cols = [k for k in tables["all"] if k.startswith("pass@")]
    table = Table(title=f"held-out evaluation of {summary['model']} (pass@k in %)")
    for name in ("task", "instances", *cols):
        table.add_column(name, justify="left" if name == "task" else "right")
    for row in [*tables["tasks"], tables["macro"], tables["all"]]:
        cells = ["–" if row[c] is None else f"{100 * row[c]:.1f}" for c in cols]
        table.add_row(row["name"], str(row["instances"]), *cells)
    console = Console()
    console.print(table)
    console.print(f"wrote {out}/ (summary.json, instances.jsonl, tasks.csv, categories.csv, results.md)")
