"""The paper's central experiment in miniature (BRORL.md §6): BroRL revives a saturated ProRL policy at equal compute.

    brorl reproduce --profile quick --out runs/reproduce-quick      # ~20 min on 2 idle cores
    brorl reproduce --profile full                                  # <= 2 h
    brorl reproduce --profile sweep                                 # N in {16, 64, ..., 1024}, <= 2 h

The pipeline, as functions (the command only parses and calls :func:`reproduce`):

1. **stage 1** (:func:`run_stage1`): the default policy trained ProRL-style (N = 16, the ``prorl-cpu`` preset)
   until held-out pass@1 on the training tasks stops improving. Criterion (:func:`plateau_reached`, Keras-style
   early stopping): evaluate every K steps; an evaluation *gains* when it beats the best so far by at least δ
   (and then becomes the best); stop after P evaluations in a row without a gain, or at the step cap. The
   arms start from the checkpoint where it stopped (the saturated policy, as the paper continues ProRLv2's
   3,000-step checkpoint, not its best).
2. **arms** (:func:`run_arm`): from that checkpoint, one run per N with the same budget of generated tokens
   (sum of ``rollout/tokens_generated``: every sample, before dynamic-sampling filtering, as the paper counts
   samples). B = :func:`prompts_for` (ProRL: B = 8; BroRL N = 512: B = 2), the square-root learning-rate rule
   (base B_0 = 8, N_0 = 16), the same mini-batches per step. Each arm steps until :func:`budget_reached`, and
   checkpoints and evaluates when it reaches each fraction of the budget.
3. **evaluation** (:func:`evaluate_policy`): held-out instances of the training tasks and of similar
   reasoning-gym tasks not trained on (:data:`UNSEEN_SETS`), pass@1 over k samples at temperature 0.6, top-p
   0.95 (paper App. D), one fixed evaluation seed for every checkpoint.
4. **analysis** (:func:`analyse`): Table 1 and Table 2 analogues, a paired t-test (final BroRL vs final ProRL
   over all held-out instances), per-task patterns, knowledge shrinkage against the stage-1 checkpoint, plots;
   ``results.json`` + ``report.md`` in OUT.

Resumable: stage 1 and each arm have their own run directory with a ``DONE.json`` marker. Rerunning the same
command skips finished stages and resumes a stopped one from its newest checkpoint (the trainer's exact resume).

How it uses the trainer: ``Trainer.run`` trains to a fixed step count, while the stages stop by their own rules
(plateau, token budget), so they drive ``Trainer.train_step`` one step at a time and log through
``trainer.tracker``. ``Trainer.evaluate`` scores the training tasks' held-out split; the reproduction also scores
unseen tasks, so it calls ``brorl.eval.runner.evaluate_problems`` with the trainer's engine and scorer on its own
problem list.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brorl.config import ConfigError, build, load_preset, option, to_dict

DONE = "DONE.json"

# Reasoning-gym tasks *not* in tiny-default, each close to a trained one, at easy settings (BRORL.md §9), to see
# what generalises. Keys are the fields of each task's reasoning-gym config dataclass.
UNSEEN_SETS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "easy-unseen": [
        # like basic_arithmetic's "4 * 3": a product of two one-digit numbers
        ("products", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
        # like spell_backward, but reversing the order of 2-3 words
        ("word_sequence_reversal", {"min_words": 2, "max_words": 3}),
        # like gcd/lcm: number theory on small numbers (primes up to 40)
        ("count_primes", {"min_n": 1, "max_n": 40}),
        # (base_conversion to base 2 was tried: its held-out split is too small to draw 12 distinct instances
        # from within minutes)
    ],
}


@dataclass(frozen=True)
class ReproduceConfig:
    """Options of ``brorl reproduce`` (a profile's ``[reproduce]`` table); training options are in ``[train]``."""

    model: str = option(
        "default", help="starting policy: 'default' (the tiny CPU policy) or a model directory"
    )
    tasks: str = option("tiny-default", help="training tasks: a mixture, task names, or a JSONL path")
    unseen: str = option(
        "easy-unseen", help="held-out tasks never trained on: a set in UNSEEN_SETS, a JSONL path, or 'none'"
    )
    train_preset: str = option("prorl-cpu", help="the TrainConfig preset every stage starts from")
    seed: int = option(0, help="seed of data order and training rollouts (the same for every arm)")
    stage1_eval_every: int = option(10, help="stage 1: evaluate every K steps")
    stage1_patience: int = option(2, help="stage 1: stop after P evaluations in a row without a gain")
    stage1_min_gain: float = option(0.01, help="stage 1: a gain is pass@1 >= best so far + δ")
    stage1_max_steps: int = option(60, help="stage 1: step cap")
    baseline_rollouts: int = option(16, help="N of stage 1 and of the ProRL arm (paper: 16)")
    rollouts: list[int] = option(
        [16, 512], help="N of each arm; must include baseline_rollouts (the arm the others are compared with)"
    )
    base_prompts: int = option(8, help="prompts per step B of the ProRL arm (prorl-cpu)")
    max_samples_per_step: int = option(
        1024, help="B = min(base_prompts, this // N): BroRL N = 512 gets B = 2 (tiny-cpu)"
    )
    budget_tokens: int = option(60000, help="generated tokens per arm (all samples, before filtering)")
    checkpoint_fractions: list[float] = option(
        [0.25, 0.5, 0.75, 1.0], help="checkpoint + evaluate when an arm reaches these fractions of the budget"
    )
    eval_instances: int = option(16, help="held-out instances per task")
    eval_samples: int = option(8, help="samples per instance: pass@1 is averaged over them (paper: 16)")
    eval_seed: int = option(1234, help="seed of the held-out draw and of evaluation sampling (fixed)")
    eval_temperature: float = option(0.6, help="evaluation temperature (paper App. D)")
    eval_top_p: float = option(0.95, help="evaluation top-p (paper App. D)")
    threads: int = option(0, help="torch CPU threads (0: torch's default)")

    def __post_init__(self) -> None:
        if not self.rollouts or min(self.rollouts) < 2 or len(set(self.rollouts)) != len(self.rollouts):
            raise ConfigError(f"rollouts must be distinct values >= 2, got {self.rollouts}")
        if self.baseline_rollouts not in self.rollouts:
            raise ConfigError(
                f"rollouts {self.rollouts} must include baseline_rollouts ({self.baseline_rollouts}): the ProRL "
                "arm is what every other arm is compared with"
            )
        if self.stage1_eval_every < 1 or self.stage1_patience < 1 or self.stage1_max_steps < 1:
            raise ConfigError("stage1_eval_every, stage1_patience and stage1_max_steps must be >= 1")
        if self.budget_tokens < 1 or self.eval_instances < 1 or self.eval_samples < 1:
            raise ConfigError("budget_tokens, eval_instances and eval_samples must be >= 1")
        if not self.checkpoint_fractions or not all(0 < f <= 1 for f in self.checkpoint_fractions):
            raise ConfigError(f"checkpoint_fractions must lie in (0, 1], got {self.checkpoint_fractions}")


def load_profile(name_or_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``[reproduce]`` values, ``[train]`` overrides) of a profile: ``quick`` → configs/reproduce-quick.toml."""
    name = name_or_path if name_or_path.endswith(".toml") else f"reproduce-{name_or_path}"
    data = load_preset(name)
    unknown = set(data) - {"reproduce", "train"}
    if unknown:
        raise ConfigError(
            f"profile {name_or_path}: unknown tables {sorted(unknown)}; use [reproduce] and [train]"
        )
    return dict(data.get("reproduce", {})), dict(data.get("train", {}))


# ---------------------------------------------------------------------------------------------------------
# The rules, as pure functions of numbers (tested on constructed inputs)


def plateau_reached(scores: Sequence[float], patience: int, min_gain: float) -> tuple[bool, int]:
    """Whether a run of evaluations has plateaued, and the index of the best one.

    Args:
        scores: held-out pass@1 of evaluations 0, 1, ... (0 = before training).
        patience: P; min_gain: δ.
    Returns:
        (True when the last P evaluations each failed to beat the best before them by >= δ, index of the best).
        A smaller rise does not move the best, so a slow creep below δ per evaluation still counts as a plateau.
    """
    best, best_i, stale = -math.inf, 0, 0
    for i, s in enumerate(scores):
        if i == 0 or s >= best + min_gain:
            best, best_i, stale = s, i, 0
        else:
            stale += 1
    return stale >= patience, best_i


def budget_reached(spent: float, target: float, step_cost: float) -> bool:
    """Stop (or checkpoint) at the step whose cumulative cost is nearest ``target``.

    With ``step_cost`` the mean cost of a step so far, the run stops once going on would overshoot the target by
    more than it now falls short: spent + step_cost / 2 >= target. Arms with big steps (BroRL) and small steps
    (ProRL) so differ from the target by at most half a step each; the report gives the tokens actually spent.
    """
    return spent + step_cost / 2 >= target


def prompts_for(n: int, base_prompts: int, max_samples_per_step: int) -> int:
    """Prompts per step B of the arm with N rollouts: B_0 while N·B_0 fits the per-step sample cap, then fewer."""
    return max(1, min(base_prompts, max_samples_per_step // n))


def arm_name(n: int) -> str:
    return f"n{n:04d}"


def arm_label(n: int, baseline_n: int) -> str:
    if n == baseline_n:
        return f"ProRL N={n}"
    return f"BroRL N={n}"


def brorl_arm(rollouts: Sequence[int]) -> int:
    """The arm compared with ProRL: N = 512 when run (the paper's), else the largest N."""
    return 512 if 512 in rollouts else max(rollouts)


# ---------------------------------------------------------------------------------------------------------
# Building configs and evaluation problems


def train_config(
    rcfg: ReproduceConfig, overrides: dict[str, Any], *, model: str, rollouts: int, prompts: int, out: Path
):
    """The TrainConfig of one stage/arm: preset < profile's [train] < what this stage fixes."""
    from brorl.trainer import TrainConfig

    values = load_preset(rcfg.train_preset, section="train") | overrides
    values |= {
        "model": model,
        "tasks": rcfg.tasks,
        "rollouts": rollouts,
        "prompts_per_step": prompts,
        "seed": rcfg.seed,
        "out": str(out),
        "steps": 1_000_000,  # not used: stages stop by their own rule (plateau, budget)
        "eval_every": 0,  # evaluation is ours: training and unseen tasks, fixed seed
        "checkpoint_every": 1_000_000,  # checkpoints are ours: at evaluations and budget fractions
        "keep_checkpoints": 0,
        "progress": False,
        "threads": rcfg.threads,
    }
    return build(TrainConfig, values, origin="reproduce profile")


def eval_problems(rcfg: ReproduceConfig) -> tuple[list, dict[str, list[str]]]:
    """Held-out problems (training tasks first, then unseen ones) and the task names of each group.

    reasoning-gym tasks use held-out instances (never in training). A JSONL training source has no held-out
    split, so its first ``eval_instances`` rows per source are evaluated (only the CI test does this).
    """
    from brorl.data import TaskSpec
    from brorl.eval.runner import heldout_problems, resolve_tasks
    from brorl.trainer.setup import load_task_problems

    def from_source(source: str) -> list:
        path = Path(source).expanduser()
        if path.exists():
            rows, _ = load_task_problems(str(path), 0, rcfg.seed)
            per: dict[str, list] = {}
            for p in rows:
                per.setdefault(p.source, []).append(p)
            return [p for ps in per.values() for p in ps[: rcfg.eval_instances]]
        if source in UNSEEN_SETS:
            specs = [TaskSpec(n, config=c) for n, c in UNSEEN_SETS[source]]
        else:
            try:
                specs = resolve_tasks([t.strip() for t in source.split(",") if t.strip()])
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
        return heldout_problems(specs, rcfg.eval_instances, rcfg.eval_seed)

    trained = from_source(rcfg.tasks)
    unseen = [] if rcfg.unseen == "none" else from_source(rcfg.unseen)
    names = {"trained": sorted({p.source for p in trained}), "unseen": sorted({p.source for p in unseen})}
    if set(names["trained"]) & set(names["unseen"]):
        raise ConfigError(f"unseen tasks {names['unseen']} overlap the training tasks {names['trained']}")
    return trained + unseen, names


def evaluate_policy(trainer: Any, problems: Sequence[Any], rcfg: ReproduceConfig) -> list:
    """Records (one per problem) of the trainer's current policy: pass@1 over ``eval_samples`` samples."""
    from brorl.data import format_prompt
    from brorl.eval.runner import evaluate_problems
    from brorl.rollout import SamplingParams

    cfg = trainer.cfg
    prompts = [
        format_prompt(p, trainer.tokenizer, template=cfg.template, answer_format=cfg.answer_format)
        for p in problems
    ]
    params = SamplingParams(
        max_new_tokens=cfg.max_new_tokens,
        temperature=rcfg.eval_temperature,
        top_p=rcfg.eval_top_p,
        seed=rcfg.eval_seed,
    )
    trainer.model.eval()
    return evaluate_problems(
        problems, prompts, trainer.c.engine, trainer.c.pool, rcfg.eval_samples, params, prompts_per_call=16
    )


def _ks(samples: int) -> list[int]:
    return [k for k in (1, 2, 4, 8, 16) if k <= samples]


def _write_json(path: Path, data: Any) -> None:
    from brorl.eval.io import json_safe

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2) + "\n")
    tmp.replace(path)  # atomic: a marker is either complete or absent


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _open_trainer(cfg: Any, run_dir: Path) -> Any:
    """A Trainer for ``run_dir``, resumed from its newest checkpoint when it has one."""
    from brorl.checkpoint import latest_checkpoint
    from brorl.trainer import Trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    resume = run_dir if latest_checkpoint(run_dir) is not None else None
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    return Trainer(cfg, resume=resume)


def _step(trainer: Any, tokens_so_far: float) -> dict[str, float]:
    """One training step, logged to the run's metrics.jsonl with the cumulative tokens (``tokens``).

    Also logs ``perf/step_cpu_seconds``: CPU time of this process (all its threads) during the step. On cores
    shared with other jobs, wall time measures the neighbours as much as the arm; CPU time does not.
    """
    cpu0 = time.process_time()
    m = trainer.train_step()
    m["perf/step_cpu_seconds"] = time.process_time() - cpu0
    trainer.wall += m["perf/step_seconds"]
    tokens = tokens_so_far + m.get("rollout/tokens_generated", 0.0)
    row = {"samples": trainer.samples, "tokens": tokens, "wall_time": round(trainer.wall, 3)} | m
    trainer.tracker.log(trainer.step, row)
    return row


def _metric_rows(run_dir: Path) -> list[dict[str, Any]]:
    from brorl.eval.io import read_metrics_jsonl

    return read_metrics_jsonl(run_dir) if (run_dir / "metrics.jsonl").is_file() else []


# ---------------------------------------------------------------------------------------------------------
# Stage 1 and the arms


@dataclass
class Context:
    """What every stage needs: the options, the [train] overrides, OUT, the evaluation problems, a printer."""

    rcfg: ReproduceConfig
    overrides: dict[str, Any]
    out: Path
    problems: list
    groups: dict[str, list[str]]
    say: Callable[[str], None]

    @property
    def trained_problems(self) -> list:
        return [p for p in self.problems if p.source in self.groups["trained"]]


def _evaluate_into(ctx: Context, trainer: Any, directory: Path, problems: list, progress: dict) -> float:
    """Evaluate the trainer's policy, write an evaluation directory; returns pass@1 over all instances."""
    from brorl.eval.io import write_eval_dir

    t0 = time.perf_counter()
    records = evaluate_policy(trainer, problems, ctx.rcfg)
    meta = {
        "model": str(directory),
        "checkpoint": progress,  # step, samples, tokens, wall_time: the x of trajectories
        "config": to_dict(ctx.rcfg),
        "seconds": time.perf_counter() - t0,
    }
    summary = write_eval_dir(directory, records, _ks(ctx.rcfg.eval_samples), meta)
    return float(summary["tables"]["all"]["pass@1"])


def run_stage1(ctx: Context) -> dict[str, Any]:
    """ProRL (N = 16) from the default policy until held-out pass@1 plateaus; returns (and writes) DONE.json."""
    rcfg, run_dir = ctx.rcfg, ctx.out / "stage1"
    done = _read_json(run_dir / DONE)
    if done is not None:
        ctx.say(f"stage 1: done (stopped at step {done['step']}, {done['stop_reason']}); skipping")
        return done
    n = rcfg.baseline_rollouts
    b = prompts_for(n, rcfg.base_prompts, rcfg.max_samples_per_step)
    cfg = train_config(rcfg, ctx.overrides, model=rcfg.model, rollouts=n, prompts=b, out=run_dir)
    trainer = _open_trainer(cfg, run_dir)
    try:
        # evaluations so far; on resume, those after the restored checkpoint are dropped
        history = [h for h in (_read_json(run_dir / "plateau.json") or []) if h["step"] <= trainer.step]
        tokens = sum(r.get("rollout/tokens_generated", 0.0) for r in _metric_rows(run_dir))
        if not history:
            history.append(_stage1_eval(ctx, trainer, tokens))
            _write_json(run_dir / "plateau.json", history)
        stop_reason = _stage1_stop(history, trainer.step, rcfg)
        while stop_reason is None:
            row = _step(trainer, tokens)
            tokens = row["tokens"]
            if trainer.step % rcfg.stage1_eval_every and trainer.step < rcfg.stage1_max_steps:
                continue
            trainer.checkpoint()
            history.append(_stage1_eval(ctx, trainer, tokens))
            _write_json(run_dir / "plateau.json", history)
            stop_reason = _stage1_stop(history, trainer.step, rcfg)
            ctx.say(f"stage 1: step {trainer.step}, held-out pass@1 {history[-1]['pass@1']:.3f}")
        progress = _progress(trainer, tokens)
        start_pass = _evaluate_into(ctx, trainer, run_dir / "eval" / "start", ctx.problems, progress)
        _, best = plateau_reached([h["pass@1"] for h in history], rcfg.stage1_patience, rcfg.stage1_min_gain)
        done = {
            # relative to OUT, so a copied OUT still works (e.g. to add sweep arms to a finished quick run)
            "checkpoint": f"stage1/checkpoints/step_{trainer.step:06d}/policy",
            "stop_reason": stop_reason,
            "criterion": {
                "eval_every": rcfg.stage1_eval_every,
                "patience": rcfg.stage1_patience,
                "min_gain": rcfg.stage1_min_gain,
                "max_steps": rcfg.stage1_max_steps,
                "rule": "evaluate every K steps; a gain is pass@1 >= best so far + δ; stop after P evaluations "
                "in a row without a gain, or at the step cap; continue from the last checkpoint",
            },
            "history": history,
            "best_step": history[best]["step"],
            "start_pass@1_all_tasks": start_pass,
            "rollouts": cfg.rollouts,
            "prompts_per_step": cfg.prompts_per_step,
            "lr": cfg.effective_lr,
            "train_cpu_seconds": _cpu_seconds(_metric_rows(run_dir)),
        } | progress
        _write_json(run_dir / DONE, done)
        ctx.say(f"stage 1: {stop_reason} at step {trainer.step}; arms start from {done['checkpoint']}")
        return done
    finally:
        trainer.close()


def _stage1_stop(history: list[dict[str, Any]], step: int, rcfg: ReproduceConfig) -> str | None:
    flat, _ = plateau_reached([h["pass@1"] for h in history], rcfg.stage1_patience, rcfg.stage1_min_gain)
    if flat:
        return "plateau"
    return "step cap" if step >= rcfg.stage1_max_steps else None


def _progress(trainer: Any, tokens: float) -> dict[str, Any]:
    return {"step": trainer.step, "samples": trainer.samples, "tokens": tokens, "wall_time": trainer.wall}


def _stage1_eval(ctx: Context, trainer: Any, tokens: float) -> dict[str, Any]:
    """Stage 1's plateau signal: pass@1 on held-out instances of the training tasks only."""
    p = _evaluate_into(
        ctx,
        trainer,
        ctx.out / "stage1" / "eval" / f"step_{trainer.step:06d}",
        ctx.trained_problems,
        _progress(trainer, tokens),
    )
    return {"step": trainer.step, "tokens": tokens, "pass@1": p}


def run_arm(ctx: Context, n: int, start_model: str) -> dict[str, Any]:
    """One arm: N rollouts per prompt from the stage-1 checkpoint until the token budget is spent."""
    rcfg, run_dir = ctx.rcfg, ctx.out / "arms" / arm_name(n)
    done = _read_json(run_dir / DONE)
    if done is not None:
        ctx.say(f"arm N={n}: done ({done['steps']} steps); skipping")
        return done
    b = prompts_for(n, rcfg.base_prompts, rcfg.max_samples_per_step)
    cfg = train_config(rcfg, ctx.overrides, model=start_model, rollouts=n, prompts=b, out=run_dir)
    trainer = _open_trainer(cfg, run_dir)
    ctx.say(
        f"arm N={n}: B={b}, lr={cfg.effective_lr:.3g}, budget {rcfg.budget_tokens:,} tokens, from step {trainer.step}"
    )
    try:
        step_tokens = [r.get("rollout/tokens_generated", 0.0) for r in _metric_rows(run_dir)]
        tokens = sum(step_tokens)
        fractions = set(rcfg.checkpoint_fractions) | {1.0}
        evaluated = [e for e in (_read_json(run_dir / "evals.json") or []) if e["step"] <= trainer.step]
        reached = {f for e in evaluated for f in e.get("fractions", [])}

        # a checkpoint whose evaluation was cut short (killed in between) is evaluated before any further step
        pending = bool(trainer.step) and all(e["step"] != trainer.step for e in evaluated)
        while 1.0 not in reached:
            if not pending:
                tokens = _arm_step(trainer, tokens, step_tokens)
            fractions_due = _due(fractions - reached, tokens, len(step_tokens), rcfg.budget_tokens)
            if fractions_due:
                if not pending:
                    trainer.checkpoint()
                ev = _arm_eval(ctx, trainer, run_dir, tokens, max(fractions_due))
                evaluated.append(ev | {"fractions": fractions_due})
                _write_json(run_dir / "evals.json", evaluated)
                reached |= set(fractions_due)
                ctx.say(f"arm N={n}: step {trainer.step}, {tokens:,.0f} tokens, pass@1 {ev['pass@1']:.3f}")
            pending = False
        done = _arm_summary(run_dir, cfg, trainer, tokens, evaluated)
        _write_json(run_dir / DONE, done)
        return done
    finally:
        trainer.close()


def _due(fractions: set[float], tokens: float, steps: int, budget: int) -> list[float]:
    """The budget fractions (not yet reached) whose target this step is the nearest step to."""
    mean = tokens / max(steps, 1)
    return sorted(f for f in fractions if budget_reached(tokens, f * budget, mean))


def _arm_step(trainer: Any, tokens: float, step_tokens: list[float]) -> float:
    """One step of an arm; appends its tokens to ``step_tokens`` and returns the new cumulative count."""
    row = _step(trainer, tokens)
    if not row.get("rollout/tokens_generated"):
        raise RuntimeError("a step generated no tokens: the budget would never be spent")
    step_tokens.append(row["rollout/tokens_generated"])
    return row["tokens"]


def _arm_eval(ctx: Context, trainer: Any, run_dir: Path, tokens: float, fraction: float) -> dict[str, Any]:
    progress = _progress(trainer, tokens)
    p = _evaluate_into(ctx, trainer, run_dir / "eval" / f"step_{trainer.step:06d}", ctx.problems, progress)
    return progress | {"fraction": fraction, "pass@1": p}


def _arm_summary(run_dir: Path, cfg: Any, trainer: Any, tokens: float, evaluated: list) -> dict[str, Any]:
    """DONE.json of an arm: its settings, what it spent, and Table 2's measurements from metrics.jsonl."""
    rows = [r for r in _metric_rows(run_dir) if "rollout/tokens_generated" in r]

    def total(key: str) -> float:
        return float(sum(r.get(key) or 0.0 for r in rows))

    generated = total("filter/groups_generated")
    informative = sum(
        (r.get("filter/pass_rate") or 0.0) * (r.get("filter/groups_generated") or 0.0) for r in rows
    )
    return {
        "rollouts": cfg.rollouts,
        "prompts_per_step": cfg.prompts_per_step,
        "lr": cfg.effective_lr,
        "mini_batches": cfg.mini_batches,
        "steps": trainer.step,
        "samples": trainer.samples,
        "tokens": tokens,
        "train_seconds": total("perf/step_seconds"),
        "train_cpu_seconds": _cpu_seconds(rows),
        "rollout_seconds": total("perf/rollout_seconds"),
        "filter_pass_rate": informative / generated if generated else math.nan,
        "generation_samples_per_second": total("rollout/num_samples")
        / max(total("perf/rollout_seconds"), 1e-9),
        "generation_tokens_per_second": total("rollout/tokens_generated")
        / max(total("perf/rollout_seconds"), 1e-9),
        "short_batches": total("filter/short_batch"),
        "evals": evaluated,
    }


# ---------------------------------------------------------------------------------------------------------
# Analysis: tables, statistics, patterns, shrinkage, plots (reads only OUT, so it can be rerun on its own)


def scores(records: Sequence[Any], groups: dict[str, list[str]]) -> dict[str, float]:
    """pass@1 per reasoning-gym category of the training tasks, the macro over trained and over unseen tasks,
    and the mean over all instances (the Table 1 columns)."""
    from brorl.eval import aggregate, macro_row

    out: dict[str, float] = {}
    trained = [r for r in records if r.task in groups["trained"]]
    unseen = [r for r in records if r.task in groups["unseen"]]
    for row in aggregate(trained, by="category") if trained else []:
        out[row["name"]] = row["pass@1"]
    for name, part in (("trained", trained), ("unseen", unseen)):
        if part:
            out[name] = macro_row(aggregate(part, by="task"))["pass@1"]
    out["all"] = aggregate(records, by="all")[0]["pass@1"]
    return out


def _series(run_dir: Path, evals: Sequence[dict[str, Any]]) -> list[tuple[float, list]]:
    """(tokens, records) of an arm's evaluations, in order."""
    from brorl.eval.io import read_eval_dir

    return [(e["tokens"], read_eval_dir(run_dir / "eval" / f"step_{e['step']:06d}")[1]) for e in evals]


def trajectories(base: Sequence[Any], series: Sequence[tuple[float, list]]) -> dict[str, tuple[list, list]]:
    """task -> (generated tokens (T+1,), pass@1 (T+1,)), the shared stage-1 policy at x = 0."""
    from brorl.eval import aggregate

    points = [(0.0, base), *series]
    out: dict[str, tuple[list, list]] = {}
    for x, records in points:
        for row in aggregate(records, by="task"):
            xs, ys = out.setdefault(row["name"], ([], []))
            xs.append(float(x))
            ys.append(row["pass@1"])
    return out


def analyse(out: Path, groups: dict[str, list[str]], rcfg: ReproduceConfig) -> dict[str, Any]:
    """Everything the paper reports, from the files in OUT; arms still running are included, marked partial."""
    from brorl.eval import knowledge_shrinkage, pair_instances, paired_t_test, task_patterns
    from brorl.eval.io import read_eval_dir

    stage1 = _read_json(out / "stage1" / DONE)
    if stage1 is None:
        raise ConfigError(f"{out}: stage 1 has not finished; nothing to analyse yet")
    base = read_eval_dir(out / "stage1" / "eval" / "start")[1]
    baseline_n, brorl_n = rcfg.baseline_rollouts, brorl_arm(rcfg.rollouts)
    table1 = [_table1_row("stage 1: ProRL to plateau", stage1, stage1["step"], base, groups)]
    table2, arms, finals, trajs = [], {}, {}, {}
    for n in sorted(rcfg.rollouts):
        run_dir = out / "arms" / arm_name(n)
        done = _read_json(run_dir / DONE)
        info = done or _partial_arm(run_dir)
        if info is None or not info["evals"]:
            continue
        series = _series(run_dir, info["evals"])
        label = arm_label(n, baseline_n) + ("" if done else " (partial)")
        arms[n], finals[n], trajs[n] = (
            info | {"label": label, "partial": done is None},
            series[-1][1],
            trajectories(base, series),
        )
        table1.append(
            _table1_row(label, info, info.get("steps", info["evals"][-1]["step"]), finals[n], groups)
        )
        if done:
            table2.append(
                {
                    "arm": label,
                    "N": n,
                    "filter pass rate": done["filter_pass_rate"],
                    "generation samples/s": done["generation_samples_per_second"],
                    "generation tokens/s": done["generation_tokens_per_second"],
                }
            )
    result: dict[str, Any] = {
        "stage1": stage1,
        "groups": groups,
        "table1": table1,
        "table2": table2,
        "arms": arms,
    }
    result["shrinkage"] = {
        arms[n]["label"]: {
            name: _shrink_summary(knowledge_shrinkage(base, finals[n], threshold))
            for name, threshold in (
                ("any_fall", 0.0),
                ("more_than_one_sample", 1.0 / rcfg.eval_samples + 1e-9),
            )
        }
        for n in arms
    }
    if baseline_n in finals and brorl_n in finals and baseline_n != brorl_n:
        pairs = pair_instances(finals[baseline_n], finals[brorl_n])
        result["t_test"] = {
            scope: paired_t_test([a.pass_rate for a, _ in ps], [b.pass_rate for _, b in ps]).to_dict()
            for scope, ps in (
                ("all", pairs),
                ("trained", [p for p in pairs if p[0].task in groups["trained"]]),
                ("unseen", [p for p in pairs if p[0].task in groups["unseen"]]),
            )
            if len(ps) >= 2
        }
        result["patterns"] = task_patterns(trajs[baseline_n], trajs[brorl_n])
        result["compared"] = [arms[baseline_n]["label"], arms[brorl_n]["label"]]
    result["trajectories"] = {arms[n]["label"]: t for n, t in trajs.items()}
    return result


def _partial_arm(run_dir: Path) -> dict[str, Any] | None:
    evals = _read_json(run_dir / "evals.json")
    if not evals:
        return None
    cfg = _read_json(run_dir / "config.json") or {}
    last = evals[-1]
    return {
        "rollouts": cfg.get("rollouts"),
        "prompts_per_step": cfg.get("prompts_per_step"),
        "steps": last["step"],
        "samples": last["samples"],
        "tokens": last["tokens"],
        "train_seconds": last["wall_time"],
        "train_cpu_seconds": _cpu_seconds([r for r in _metric_rows(run_dir) if r["step"] <= last["step"]]),
        "evals": evals,
    }


def _cpu_seconds(rows: Sequence[dict[str, Any]]) -> float | None:
    """Summed ``perf/step_cpu_seconds`` of training rows; None if a row lacks it (logged by older versions)."""
    steps = [r for r in rows if "rollout/tokens_generated" in r]
    if any(r.get("perf/step_cpu_seconds") is None for r in steps):
        return None
    return float(sum(r["perf/step_cpu_seconds"] for r in steps))


def _table1_row(label: str, info: dict[str, Any], steps: int, records: Sequence[Any], groups: dict) -> dict:
    seconds = info.get("train_seconds", info.get("wall_time", 0.0)) or 0.0
    return {
        "method": label,
        "N": info["rollouts"],
        "prompts/step": info["prompts_per_step"],
        "steps": steps,
        "samples (k)": info["samples"] / 1000,
        "tokens (k)": info["tokens"] / 1000,
        "train hours": seconds / 3600,
        "CPU hours": None if info.get("train_cpu_seconds") is None else info["train_cpu_seconds"] / 3600,
    } | {f"pass@1 {k}": v for k, v in scores(records, groups).items()}


def _shrink_summary(s: dict[str, Any]) -> dict[str, Any]:
    keep = ("instances", "shrunk", "shrunk_frac", "mean_drop", "max_drop", "total_drop")
    return {k: s[k] for k in keep} | {"worst": s["worst"][:5]}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:,.1f}"
    return "–" if v is None else str(v)


def markdown_table(rows: Sequence[dict[str, Any]], percent: Sequence[str] = ()) -> str:
    """Rows of dicts as a Markdown table (union of keys in first-seen order); ``percent`` columns in %."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [
            f"{100 * r[c]:.1f}" if c in percent and isinstance(r.get(c), float) else _fmt(r.get(c))
            for c in cols
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_markdown(result: dict[str, Any], command: str) -> str:
    """The Markdown report of OUT: Tables 1 and 2, the t-test, patterns, shrinkage, plots."""
    s1 = result["stage1"]
    pct = [k for r in result["table1"] for k in r if k.startswith("pass@1")]
    parts = [
        "# BroRL reproduction (miniature)\n",
        f"Command: `{command}`\n",
        f"Training tasks: {', '.join(result['groups']['trained'])}. Unseen tasks (never trained on): "
        f"{', '.join(result['groups']['unseen']) or 'none'}.\n",
        f"Stage 1 stopped at step {s1['step']} ({s1['stop_reason']}; best evaluation at step {s1['best_step']}). "
        f"Rule: {s1['criterion']['rule']} (K = {s1['criterion']['eval_every']}, P = {s1['criterion']['patience']}, "
        f"δ = {s1['criterion']['min_gain']}, cap = {s1['criterion']['max_steps']}).\n",
        "## Table 1: held-out pass@1 (%) at equal generated tokens\n",
        "Samples and tokens are counted before dynamic-sampling filtering; `train hours` is wall-clock time of "
        "training steps on 2 shared CPU cores (evaluation excluded). Columns per reasoning-gym category cover the "
        "training tasks; `trained` / `unseen` are macro means over tasks; `all` is the mean over all instances.\n",
        markdown_table(result["table1"], pct),
        "## Table 2: dynamic sampling and generation throughput\n",
        markdown_table(result["table2"]),
    ]
    if "t_test" in result:
        a, b = result["compared"]
        rows = [
            {"scope": k}
            | {
                c: v[c]
                for c in (
                    "instances",
                    "mean_a",
                    "mean_b",
                    "mean_diff",
                    "t",
                    "p_one_tailed",
                    "ci_low",
                    "ci_high",
                )
            }
            for k, v in result["t_test"].items()
        ]
        parts += [
            f"## Paired t-test: {b} (B) vs {a} (A), final checkpoints\n",
            "One-tailed, H1: B > A.\n",
            markdown_table(rows),
        ]
        counts: dict[str, int] = {}
        for row in result["patterns"]:
            counts[row["pattern"]] = counts.get(row["pattern"], 0) + 1
        parts += [
            "## Per-task patterns (A = ProRL, B = BroRL; x = generated tokens, stage-1 policy at x = 0)\n",
            ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + "\n",
            markdown_table(result["patterns"], ["a_first", "a_last", "b_first", "b_last"]),
        ]
    shrink = [
        {"arm": arm, "threshold": name} | {k: v for k, v in s.items() if k != "worst"}
        for arm, by in result["shrinkage"].items()
        for name, s in by.items()
    ]
    parts += ["## Knowledge shrinkage against the stage-1 checkpoint\n", markdown_table(shrink)]
    parts += [
        "## Plots\n",
        "![pass@1 vs tokens](pass_vs_tokens.png)\n",
        "![per-task trajectories](task_trajectories.png)\n",
    ]
    return "\n".join(parts)


def write_plots(result: dict[str, Any], out: Path, rcfg: ReproduceConfig) -> list[Path]:
    """pass_vs_tokens.png, task_trajectories.png, metrics_vs_samples.png (and sweep.png with > 2 arms)."""
    from brorl.eval.plots import _pyplot, plot_run_metrics, plot_task_trajectories

    plt = _pyplot()
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    s1 = result["table1"][0]
    for ax, group in zip(axes, ("trained", "unseen"), strict=True):
        for n, arm in result["arms"].items():
            xs = [0.0] + [e["tokens"] / 1000 for e in arm["evals"]]
            run_dir = out / "arms" / arm_name(n)
            ys = [s1.get(f"pass@1 {group}", math.nan)] + [
                scores(recs, result["groups"]).get(group, math.nan)
                for _, recs in _series(run_dir, arm["evals"])
            ]
            ax.plot(xs, ys, marker="o", ms=3, label=arm["label"])
        ax.set_title(f"held-out pass@1, {group} tasks (macro)", fontsize=10)
        ax.set_xlabel("generated tokens (k) since the stage-1 checkpoint")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "pass_vs_tokens.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    if result.get("compared"):
        a, b = result["compared"]
        traj = {k: result["trajectories"][k] for k in (a, b)}
        patterns = {r["task"]: r["pattern"] for r in result["patterns"]}
        paths.append(
            plot_task_trajectories(traj, out / "task_trajectories.png", "generated tokens", patterns)
        )
    runs = {arm["label"]: _metric_rows(out / "arms" / arm_name(n)) for n, arm in result["arms"].items()}
    # training curves only: held-out pass@1 is in pass_vs_tokens.png (the arms do not log eval/ metrics)
    curves = ("reward/mean", "filter/pass_rate", "rollout/unseen_mass", "policy/entropy")
    paths += plot_run_metrics(runs, out, curves, axes=("samples",))
    if len(result["arms"]) > 2:
        paths.append(_sweep_plot(result, out, plt))
    return paths


def _sweep_plot(result: dict[str, Any], out: Path, plt: Any) -> Path:
    rows = [r for r in result["table1"][1:]]
    ns = [r["N"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for key in ("pass@1 trained", "pass@1 unseen"):
        axes[0].plot(ns, [r.get(key, math.nan) for r in rows], marker="o", label=key)
    axes[0].set_title("final held-out pass@1 at equal tokens", fontsize=10)
    t2 = {r["N"]: r for r in result["table2"]}
    axes[1].plot(
        ns,
        [t2.get(n, {}).get("filter pass rate", math.nan) for n in ns],
        marker="o",
        label="filter pass rate",
    )
    axes[1].set_title("dynamic-sampling pass rate", fontsize=10)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("rollouts per prompt N")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "sweep.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------
# The whole pipeline


def reproduce(
    rcfg: ReproduceConfig,
    overrides: dict[str, Any],
    out: Path,
    *,
    command: str = "brorl reproduce",
    say: Callable[[str], None] = print,
    train: bool = True,
) -> dict[str, Any]:
    """Stage 1 → arms → analysis into OUT (results.json, report.md, PNGs); finished stages are skipped.

    With ``train=False`` only the analysis runs, on whatever OUT holds (arms still running count as partial).
    """
    out.mkdir(parents=True, exist_ok=True)
    profile = {"reproduce": to_dict(rcfg), "train": overrides}
    saved = _read_json(out / "profile.json")
    if saved is not None and not _profiles_agree(saved, json.loads(json.dumps(profile, default=str))):
        raise ConfigError(
            f"{out} holds a reproduction with other settings (see {out / 'profile.json'}); "
            "rerun with the same profile to resume, or choose another --out"
        )
    if train:
        _write_json(out / "profile.json", profile)
    t0 = time.time()
    problems, groups = eval_problems(rcfg)
    ctx = Context(rcfg, overrides, out, problems, groups, say)
    say(
        f"reproduce: {len(problems)} held-out instances ({len(groups['trained'])} trained, "
        f"{len(groups['unseen'])} unseen tasks); out {out}"
    )
    if train:
        stage1 = run_stage1(ctx)
        for n in sorted(rcfg.rollouts):
            run_arm(ctx, n, str(out / stage1["checkpoint"]))
    result = analyse(out, groups, rcfg)
    result["command"], result["seconds_this_invocation"] = command, time.time() - t0
    _write_json(out / "results.json", result)
    write_plots(result, out, rcfg)
    (out / "report.md").write_text(report_markdown(result, command))
    return result


def _profiles_agree(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether OUT's saved profile gives the same results as the current one for every stage already run.

    ``threads`` changes speed only; ``rollouts`` only adds or drops arms (each arm depends on stage 1 and its own
    N), so a finished quick run can be extended to the sweep. Keys the saved profile lacks (added to
    ReproduceConfig since) are taken to have had their default.
    """
    ignored = {"threads", "rollouts"}
    defaults = to_dict(ReproduceConfig())
    same = all(
        saved["reproduce"].get(k, defaults[k]) == v
        for k, v in current["reproduce"].items()
        if k not in ignored
    )
    return same and saved["train"] == current["train"]
