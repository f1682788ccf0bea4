"""Supervised fine-tuning (SFT) of a causal LM on question → answer text pairs, and the tiny default policy's build.

BroRL starts RL from a model that already solves some problems (BRORL.md §4: ProRL's checkpoint). This module
gives brorl its own starting point with no downloads: next-token cross-entropy on ``prompt + target + eos``, with
the loss only on the target tokens (the prompt is context, not something to imitate), AdamW, linear warm-up then a
cosine or constant learning rate, periodic held-out evaluation by sampling at temperature 1, and a
``save_pretrained`` directory (safetensors) with a model card.

    brorl sft --model DIR --tasks tiny-default --steps 500 --output runs/sft
    brorl sft --default          # rebuild the cached default policy (BRORL.md §9)

Stages of :func:`run_sft`: data → tokenizer/model → encode → train (with evaluations) → final evaluation → save.
Same config, same thread count → same weights (CPU kernels are deterministic for a fixed thread count; a different
``threads`` changes float summation order and so the bits, and the wall-clock cap can end a run early).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from brorl.config import ConfigError, option, to_dict

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label value that transformers' causal-LM loss skips


@dataclass(frozen=True)
class SFTConfig:
    """Options of ``brorl sft``; each ``help`` is the ``--help`` line."""

    model: str | None = option(
        None,
        help="directory of a saved Hugging Face causal LM to fine-tune; 'none' "
        "builds a new tiny Llama from scratch with a BPE tokenizer trained on the data",
    )
    tasks: list[str] = option(
        default_factory=lambda: ["tiny-default"],
        help="reasoning-gym task names and/or brorl mixture names (e.g. tiny-default)",
    )
    data: str | None = option(
        None, help="a file source instead of --tasks: JSONL, Parquet or a saved HF dataset"
    )
    target: Literal["auto", "answer", "solution"] = option(
        "auto",
        help="what the model learns to write: the answer, or the worked solution then the answer "
        "(auto: the solution when the problem has one)",
    )
    answer_format: str = option(
        "answer_tag", help="how the answer is marked in the target; RL must extract it with the same format"
    )
    train_size: int = option(20000, help="training problems drawn (split 'train'); reused over epochs")
    eval_size: int = option(64, help="held-out problems per task (split 'heldout') for evaluation")
    eval_samples: int = option(2, help="samples per held-out problem at temperature 1; pass@1 averages them")
    eval_every: int = option(250, help="evaluate every this many optimizer steps (0: only at the end)")
    max_new_tokens: int = option(32, help="generation budget per answer during evaluation")
    steps: int | None = option(None, help="optimizer steps; 'none' derives them from --epochs")
    epochs: float = option(1.0, help="passes over the training problems when --steps is none")
    batch_size: int = option(32, help="sequences per optimizer step")
    lr: float = option(1e-3, help="peak learning rate (AdamW)")
    schedule: Literal["cosine", "constant"] = option("cosine", help="learning-rate shape after warm-up")
    warmup_steps: int = option(50, help="steps of linear warm-up from 0 to --lr")
    min_lr_ratio: float = option(0.1, help="cosine floor as a fraction of --lr")
    weight_decay: float = option(0.1, help="AdamW decoupled weight decay")
    grad_clip: float = option(1.0, help="clip the global gradient norm to this (0: off)")
    max_length: int = option(128, help="longest prompt + target in tokens; longer examples are dropped")
    seed: int = option(0, help="seed for data, initialisation, batch order and evaluation sampling")
    threads: int = option(2, help="torch CPU threads; results are bit-identical only for the same count")
    time_limit_minutes: float | None = option(
        None, help="stop training after this wall-clock time (safety net; the step count is the real budget)"
    )
    output: str = option("runs/sft", help="directory to write the model, tokenizer and model card into")
    overwrite: bool = option(False, help="replace --output if it already exists")
    vocab_size: int = option(2000, help="scratch model only: BPE vocabulary size")
    hidden_size: int = option(256, help="scratch model only: hidden width")
    num_layers: int = option(4, help="scratch model only: decoder layers")
    num_heads: int = option(4, help="scratch model only: attention heads")
    intermediate_size: int = option(688, help="scratch model only: MLP width")

    def __post_init__(self) -> None:
        positive = (
            "train_size",
            "eval_size",
            "eval_samples",
            "batch_size",
            "max_length",
            "max_new_tokens",
            "threads",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps={self.steps} must be at least 1, or 'none' to use --epochs")
        if self.steps is None and self.epochs <= 0:
            raise ConfigError(f"epochs={self.epochs} must be positive when --steps is none")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(
                f"need lr > 0 and 0 <= min_lr_ratio <= 1 (got lr={self.lr}, min_lr_ratio={self.min_lr_ratio})"
            )
        if self.answer_format not in TARGET_FORMATS:
            raise ConfigError(
                f"answer_format={self.answer_format!r} is not one of {sorted(TARGET_FORMATS)} (the formats "
                "brorl.data.extract_answer reads)"
            )
        if self.data is None and not self.tasks:
            raise ConfigError("no training data: give --tasks (e.g. tiny-default) or --data FILE")


class Example(NamedTuple):
    """One supervised pair: the model reads ``prompt`` and learns to write ``target`` then eos."""

    prompt: str
    target: str
    task: str


class Encoded(NamedTuple):
    """Token ids of one example; ``labels`` is ``IGNORE_INDEX`` on the prompt. Both length L ≤ max_length."""

    input_ids: list[int]
    labels: list[int]


# ---------------------------------------------------------------------------------------------------- encoding


def encode_examples(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[list[Encoded], int]:
    """Tokenize prompt and target separately and append eos; no special tokens are added to the prompt.

    This is exactly what the rollout engine feeds the model (prompt text encoded as-is, then generated ids), so no
    BPE merge crosses the prompt/answer boundary and no bos appears that RL would not also see.

    Returns the encoded examples that fit in ``max_length`` and how many were dropped for being longer.
    Dropping, not truncating: a truncated target would teach the model to stop without its answer.
    """
    kept, dropped = [], 0
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    targets = tokenizer([e.target for e in examples], add_special_tokens=False)["input_ids"]
    for p_ids, t_ids in zip(prompts, targets, strict=True):
        t_ids = [*t_ids, tokenizer.eos_token_id]
        if len(p_ids) + len(t_ids) > max_length:
            dropped += 1
            continue
        kept.append(Encoded([*p_ids, *t_ids], [IGNORE_INDEX] * len(p_ids) + t_ids))
    return kept, dropped


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch into ``input_ids``, ``attention_mask`` and ``labels``, each of shape (B, T)."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak learning rate before optimizer step ``step`` (0-based) of ``total``.

    Linear warm-up over ``warmup`` steps (step 0 gets 1/warmup, never 0, so no step is wasted), then
    ``constant`` (1) or ``cosine`` decay from 1 to ``min_ratio`` at the last step.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}; choose 'cosine' or 'constant'")
    span = max(1, total - 1 - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def batch_order(n: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Indices of each step's batch: fresh permutations of ``range(n)`` epoch after epoch (seeded).

    Returns ``steps`` lists of ``min(batch_size, n)`` indices.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    size = min(batch_size, n)
    order: list[int] = []
    batches = []
    for _ in range(steps):
        if len(order) < size:
            order += torch.randperm(n, generator=gen).tolist()
        batches.append(order[:size])
        order = order[size:]
    return batches


# ---------------------------------------------------------------------------------------------------- training


class TrainResult(NamedTuple):
    """What :func:`train` did: per-step losses, how many steps ran, whether the time cap stopped it."""

    losses: list[float]
    steps_done: int
    stopped_by_time: bool
    seconds: float


def train(
    model: PreTrainedModel,
    data: Sequence[Encoded],
    *,
    pad_id: int,
    steps: int,
    batch_size: int,
    lr: float,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    seed: int = 0,
    time_limit_s: float | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place with AdamW on ``data``; the loss is the mean over target tokens of each batch.

    ``on_step(step, loss, lr)`` is called after every optimizer step (1-based ``step``), for progress display and
    periodic evaluation (it may switch the model to eval mode; training mode is restored before the next step).
    """
    import torch

    if not data:
        raise ValueError("no training examples left (all longer than max_length?); raise --max-length")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]  # norms and biases: no weight decay
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )
    losses: list[float] = []
    start = time.monotonic()
    for step, idx in enumerate(batch_order(len(data), steps, batch_size, seed)):
        if time_limit_s is not None and time.monotonic() - start > time_limit_s:
            return TrainResult(losses, step, True, time.monotonic() - start)
        model.train()
        factor = lr_factor(step, steps, warmup_steps, schedule, min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr * factor
        loss = model(**collate([data[i] for i in idx], pad_id)).loss
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, losses[-1], lr * factor)
    return TrainResult(losses, steps, False, time.monotonic() - start)


# ---------------------------------------------------------------------------------------------------- sampling


def sample_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    n: int = 1,
    max_new_tokens: int,
    seed: int,
    temperature: float = 1.0,
) -> list[str]:
    """``n`` completions per prompt at ``temperature`` (no top-k/top-p), decoded without special tokens.

    Uses brorl's rollout engine (``brorl.rollout.HFRolloutEngine``), the same sampler RL uses, so evaluation sees
    prompts encoded exactly as in training. Returns B*n texts, prompt-major; same seed, same texts.
    """
    from brorl.rollout import HFRolloutEngine, SamplingParams

    model.eval()
    params = SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=0, top_p=1.0, seed=seed
    )
    return list(HFRolloutEngine(model, tokenizer).generate(list(prompts), n=n, params=params).response_text)


def atomic_replace_dir(src: Path, dest: Path) -> None:
    """Move the finished directory ``src`` to ``dest`` so that ``dest`` is never seen half-written.

    An existing ``dest`` is first renamed aside and deleted only after the new one is in place; ``src`` must be on
    the same filesystem (create it with ``tempfile.mkdtemp(dir=dest.parent)``).
    """
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, old / dest.name)
    os.replace(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- data

# answer_format -> how a gold answer is written in the target (the inverse of brorl.data.extract_answer)
TARGET_FORMATS: dict[str, Callable[[str], str]] = {
    "answer_tag": lambda a: f"<answer>{a}</answer>",
    "boxed": lambda a: f"\\boxed{{{a}}}",
    "last_line": lambda a: a,
    "raw": lambda a: a,
}


def resolve_tasks(names: Sequence[str]) -> list[Any]:
    """``TaskSpec`` list for mixture names (expanded) and reasoning-gym task names (default difficulty)."""
    from brorl.data import MIXTURES, TaskSpec, task_names

    known = set(task_names())
    specs = []
    for name in names:
        if name in MIXTURES:
            specs += MIXTURES[name]
        elif name in known:
            specs.append(TaskSpec(name))
        else:
            raise ConfigError(
                f"unknown task or mixture {name!r}: use a mixture ({', '.join(sorted(MIXTURES))}) "
                "or a reasoning-gym task name (`python -c 'import reasoning_gym; "
                "print(sorted(reasoning_gym.factory.DATASETS))'` lists them)"
            )
    return specs


def load_sft_problems(cfg: SFTConfig) -> tuple[list[Any], list[Any]]:
    """(train, held-out) problems: reasoning-gym splits for ``--tasks``, or a seeded split of a ``--data`` file
    that holds out up to ``eval_size`` problems per source (at most a fifth of each)."""
    import numpy as np

    from brorl.data import load_problems, reasoning_gym_problems

    if cfg.data is None:
        specs = resolve_tasks(cfg.tasks)
        try:
            train_set = reasoning_gym_problems(specs, size=cfg.train_size, split="train", seed=cfg.seed)
            heldout = [
                p
                for s in specs
                for p in reasoning_gym_problems(
                    [dataclasses.replace(s, weight=1.0)], size=cfg.eval_size, split="heldout", seed=cfg.seed
                )
            ]
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return train_set, heldout
    try:
        problems, _report = load_problems(cfg.data)
    except ValueError as exc:
        raise ConfigError(f"--data: {exc}") from exc
    if not problems:
        raise ConfigError(f"--data {cfg.data}: no problems could be read")
    order = np.random.default_rng(cfg.seed).permutation(len(problems))
    by_source: dict[str, list[Any]] = {}
    for i in order:
        by_source.setdefault(problems[i].source, []).append(problems[i])
    train_set, heldout = [], []
    for group in by_source.values():
        n_eval = min(cfg.eval_size, len(group) // 5)
        heldout += group[:n_eval]
        train_set += group[n_eval:][: cfg.train_size]
    return train_set, heldout


def make_examples(
    problems: Sequence[Any], tokenizer: Any, *, target: str, answer_format: str
) -> list[Example]:
    """Prompt (``brorl.data.format_prompt``) and target text for each problem with an answer.

    ``target``: ``answer`` → the formatted answer; ``solution`` → the worked solution then the formatted answer
    (problems without one fall back to the answer); ``auto`` behaves like ``solution``.
    """
    from brorl.data import format_prompt

    if answer_format not in TARGET_FORMATS:
        raise ConfigError(f"unknown answer_format {answer_format!r}; choose one of {sorted(TARGET_FORMATS)}")
    out = []
    for p in problems:
        if p.answer is None:
            continue  # code problems checked only by tests have no target to imitate
        text = TARGET_FORMATS[answer_format](p.answer.strip())
        if target != "answer" and p.solution:
            text = f"{p.solution.strip()}\n{text}"
        out.append(Example(format_prompt(p, tokenizer, answer_format=answer_format), text, p.source))
    if not out:
        raise ConfigError("none of the problems has an answer to train on")
    return out


# ---------------------------------------------------------------------------------------------------- evaluation


def score_completion(problem: Any, completion: str, answer_format: str) -> float:
    """1.0 if the completion's extracted answer gets the full reward from ``brorl.rewards.score_answer`` (the
    verifier RL uses: reasoning-gym's own scorer, math-verify, exact match, sandboxed tests), else 0.0.

    Partial credit counts as wrong: pass@1 asks whether the answer is right.
    """
    from brorl.rewards import extract_answer, score_answer

    answer = extract_answer(completion, answer_format)
    if answer is None:
        return 0.0
    reward, _reason = score_answer(problem, answer)
    return 1.0 if reward >= 1.0 else 0.0


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Any],
    *,
    answer_format: str,
    samples: int,
    max_new_tokens: int,
    seed: int,
) -> dict[str, float]:
    """Held-out pass@1 per task: the mean correctness of ``samples`` temperature-1 samples per problem
    (``{}`` when there are no held-out problems)."""
    if not problems:
        return {}
    prompts = [format_for(p, tokenizer, answer_format) for p in problems]
    completions = sample_completions(
        model, tokenizer, prompts, n=samples, max_new_tokens=max_new_tokens, seed=seed
    )  # (B*N,) prompt-major
    totals: dict[str, list[float]] = {}
    for i, text in enumerate(completions):
        p = problems[i // samples]
        totals.setdefault(p.source, []).append(score_completion(p, text, answer_format))
    return {task: sum(v) / len(v) for task, v in sorted(totals.items())}


def format_for(problem: Any, tokenizer: Any, answer_format: str) -> str:
    """The prompt text of one problem, as in training (``brorl.data.format_prompt``, template ``auto``)."""
    from brorl.data import format_prompt

    return format_prompt(problem, tokenizer, answer_format=answer_format)


# ---------------------------------------------------------------------------------------------------- the run


class SFTResult(NamedTuple):
    """Where the model went and what it scored (task → held-out pass@1)."""

    output: Path
    scores: dict[str, float]
    train: TrainResult
    parameters: int


def init_model(cfg: SFTConfig, texts: Sequence[str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``cfg.model``, or build a tokenizer trained on ``texts`` and a fresh tiny Llama (seeded)."""
    import torch
    from transformers import LlamaForCausalLM

    from brorl.models import load_causal_lm, load_tokenizer, tiny_llama_config, train_bpe_tokenizer

    if cfg.model is not None:
        try:
            return load_causal_lm(cfg.model), load_tokenizer(cfg.model)
        except ValueError as exc:
            raise ConfigError(f"--model: {exc}") from exc
    tokenizer = train_bpe_tokenizer(texts, vocab_size=cfg.vocab_size, model_max_length=2 * cfg.max_length)
    config = tiny_llama_config(
        tokenizer,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_positions=2 * cfg.max_length,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config), tokenizer


def run_sft(
    cfg: SFTConfig,
    *,
    title: str = "brorl SFT model",
    summary: str = "",
    quiet: bool = False,
    command: str | None = None,
) -> SFTResult:
    """The whole ``brorl sft`` run: data → model → train with evaluations → final evaluation → atomic save."""
    import torch

    output = Path(cfg.output).expanduser()
    if output.exists() and not cfg.overwrite:
        raise ConfigError(f"--output {output} already exists; pass --overwrite or choose another directory")
    if cfg.model is not None:
        _peek_tokenizer(cfg.model)  # fail on a bad --model before spending time on data
    torch.set_num_threads(cfg.threads)
    train_problems, heldout = load_sft_problems(cfg)
    examples = make_examples(
        train_problems,
        None if cfg.model is None else _peek_tokenizer(cfg.model),
        target=cfg.target,
        answer_format=cfg.answer_format,
    )
    model, tokenizer = init_model(cfg, [t for e in examples for t in (e.prompt, e.target)])
    encoded, dropped = encode_examples(examples, tokenizer, cfg.max_length)
    if not encoded:
        raise ConfigError(
            f"all {dropped} training examples are longer than max_length={cfg.max_length} tokens "
            "with this tokenizer; raise --max-length"
        )
    steps = cfg.steps or max(1, math.ceil(cfg.epochs * len(encoded) / cfg.batch_size))
    log: list[dict[str, Any]] = []
    evaluate_now = functools.partial(
        evaluate,
        tokenizer=tokenizer,
        problems=heldout,
        answer_format=cfg.answer_format,
        samples=cfg.eval_samples,
        max_new_tokens=cfg.max_new_tokens,
    )
    with _progress(quiet) as progress:
        task = progress.add_task("sft", total=steps, loss=float("nan"), score="")
        on_step = _step_hook(cfg, model, evaluate_now, log, progress, task)
        result = train(
            model,
            encoded,
            pad_id=tokenizer.pad_token_id,
            steps=steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            schedule=cfg.schedule,
            warmup_steps=cfg.warmup_steps,
            min_lr_ratio=cfg.min_lr_ratio,
            weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip,
            seed=cfg.seed,
            on_step=on_step,
            time_limit_s=None if cfg.time_limit_minutes is None else 60 * cfg.time_limit_minutes,
        )
    scores = evaluate_now(model, seed=cfg.seed + 1)
    log.append({"step": result.steps_done, **_score_metrics(scores)})
    facts = _facts(cfg, model, tokenizer, result, dropped)
    card = _card(cfg, title, summary, facts, scores, command if command is not None else _command_line())
    _save(cfg, output, model, tokenizer, card, log, scores, facts)
    return SFTResult(output, scores, result, facts["parameters"])


def _peek_tokenizer(path: str) -> Any:
    from brorl.models import load_tokenizer

    try:
        return load_tokenizer(path)
    except ValueError as exc:
        raise ConfigError(f"--model: {exc}") from exc


def _score_metrics(scores: dict[str, float]) -> dict[str, float]:
    out = {f"eval/pass@1/{task}": s for task, s in scores.items()}
    out["eval/pass@1_macro"] = sum(scores.values()) / max(1, len(scores))
    return out


def _step_hook(
    cfg: SFTConfig,
    model: Any,
    evaluate_now: Callable[..., dict[str, float]],
    log: list[dict[str, Any]],
    progress: Any,
    task: Any,
) -> Callable[[int, float, float], None]:
    """Progress, a metrics row every 10 steps, and a held-out evaluation every ``eval_every`` steps."""

    def on_step(step: int, loss: float, lr: float) -> None:
        fields: dict[str, Any] = {"loss": loss}
        if step % 10 == 0:
            log.append({"step": step, "sft/loss": loss, "sft/lr": lr})
        if cfg.eval_every and step % cfg.eval_every == 0:
            scores = evaluate_now(model, seed=cfg.seed + step)
            log.append({"step": step, **_score_metrics(scores)})
            fields["score"] = f"pass@1 {_score_metrics(scores)['eval/pass@1_macro']:.1%}"
            progress.log(f"step {step}: loss {loss:.4f}, held-out {fields['score']}")
        progress.update(task, advance=1, **fields)

    return on_step


class _NoProgress:
    """Stands in for ``rich.progress.Progress`` under ``--quiet``."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None

    def log(self, message: str) -> None:
        print(f"sft: {message}", file=sys.stderr, flush=True)  # quiet drops the bar, not the evaluations


def _progress(quiet: bool) -> Any:
    if quiet:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[score]}"),
        TimeElapsedColumn(),
    )


def _facts(cfg: SFTConfig, model: Any, tokenizer: Any, result: TrainResult, dropped: int) -> dict[str, Any]:
    import torch
    import transformers

    import brorl
    from brorl.models import count_parameters

    tail = result.losses[-50:]
    return {
        "architecture": type(model).__name__,
        "parameters": count_parameters(model),
        "vocab_size": len(tokenizer),
        "version": brorl.__version__,
        "steps_done": result.steps_done,
        "batch_size": cfg.batch_size,
        "seconds": result.seconds,
        "threads": cfg.threads,
        "stopped_by_time": result.stopped_by_time,
        "seed": cfg.seed,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "answer_format": cfg.answer_format,
        "dropped": dropped,
        "final_loss": sum(tail) / len(tail) if tail else float("nan"),
        "target_desc": "the answer"
        if cfg.target == "answer"
        else "the worked solution (when the problem has one) then the answer",
        "eval_desc": f"{cfg.eval_size} held-out problems per task, {cfg.eval_samples} samples each, temperature 1, "
        f"no top-k/top-p, at most {cfg.max_new_tokens} new tokens; an answer counts when the task's scorer gives 1.",
    }


def _card(
    cfg: SFTConfig, title: str, summary: str, facts: dict[str, Any], scores: dict[str, float], command: str
) -> str:
    from brorl.models.card import render_model_card

    if cfg.data is not None:
        data_lines = [f"file source `{cfg.data}` (up to {cfg.train_size} training problems per source)"]
    else:
        data_lines = [
            f"reasoning-gym `{s.name}` weight {s.weight:g}, config `{json.dumps(s.config)}`"
            for s in resolve_tasks(cfg.tasks)
        ]
        data_lines.append(
            f"{cfg.train_size} training problems (split 'train', seed {cfg.seed}); held-out "
            "questions never appear in training (`brorl.data` splits by question hash)"
        )
    base = f"fine-tuned from `{cfg.model}`" if cfg.model else "trained from scratch (tokenizer included)"
    return render_model_card(
        title=title,
        summary=summary or f"A causal LM {base} by `brorl sft`.",
        facts=facts,
        data_lines=data_lines,
        scores=scores,
        command=command,
    )


def _save(
    cfg: SFTConfig,
    output: Path,
    model: Any,
    tokenizer: Any,
    card: str,
    log: list[dict[str, Any]],
    scores: dict[str, float],
    facts: dict[str, Any],
) -> None:
    """Write everything into a temporary sibling directory, then move it to ``output`` in one rename."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(card)
        (tmp / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in log))
        info = {
            "sft_config": to_dict(cfg),
            "scores": scores,
            "facts": facts,
            "prompt": {
                "template": "auto",
                "answer_format": cfg.answer_format,
                # the literal prompt with a placeholder, so other tools can format questions the same way
                "format": format_for("{question}", tokenizer, cfg.answer_format),
            },
        }
        (tmp / "brorl_sft.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); a model dir is ordinary data
        atomic_replace_dir(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _command_line() -> str:
    if Path(sys.argv[0]).name in ("brorl", "__main__.py"):
        return " ".join(["brorl", *sys.argv[1:]])
    return ""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
