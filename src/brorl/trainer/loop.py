"""The BroRL training loop: ProRLv2 at large N, one step as named stages (BRORL.md §4, §7).

    collect (B prompts × N rollouts, refilled by dynamic sampling) → score → filter → advantage → update
    → evaluate (periodically) → checkpoint

Each stage returns its metrics; ``Trainer.train_step`` reads like that list. The maths lives in ``brorl.algo``,
generation in ``brorl.rollout``, scoring in ``brorl.rewards``; this module wires them, owns the optimizer, the
reference policy, the surplus groups, and the run directory.

    brorl train                                    # BroRL (N = 512) on the tiny default policy, CPU
    brorl train --preset prorl-cpu --out runs/prorl
    brorl train --resume runs/train                # continue a stopped or killed run exactly
    torchrun --nproc_per_node 8 -m brorl train ... # data-parallel over 8 processes (docs/distributed.md)

Distributed runs (``Dist`` from ``brorl.distributed``) keep one code path: every rank advances the problem stream
identically and generates its share of each round; informative groups are announced to all ranks (keys only), so
every rank makes the same dynamic-sampling decisions and keeps the same batch and surplus as one process would;
the batch is then re-split across ranks for the update (group records move only to the rank that trains on
them), advantages are whitened over the global batch, the loss is divided by the global token count and the
gradients are summed across ranks. Only rank 0 logs and writes checkpoints.

With ``--sharding fsdp`` (``brorl.sharding``) the policy, its gradients, the AdamW state and the reference are
sharded across ranks: each phase that runs the model (generation rounds, old and reference log-probs, a
mini-batch's training passes, evaluation) is wrapped in ``gathered(model)``, which every rank enters at the same
point, and a mini-batch's gradients are reduce-scattered once before clipping. Without it those are no-ops.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brorl.algo import aggregate, compute_advantages, informative_groups, kl_penalty, policy_loss
from brorl.algo.losses import truncated_is_weights
from brorl.algo.schedule import warmup_factor
from brorl.config import ConfigError
from brorl.distributed import Dist, batch_plan, combine_metrics, shard
from brorl.sharding import gathered
from brorl.trainer.config import TrainConfig
from brorl.trainer.logprobs import group_logprobs
from brorl.trainer.stream import Group, ProblemStream

__all__ = ["Trainer", "good_turing_unseen"]


def good_turing_unseen(answers: list[Any]) -> float:
    """Good–Turing estimate of the answer mass a group never sampled: the share of its answers seen exactly once."""
    if not answers:
        return 0.0
    counts = Counter(answers)
    return sum(1 for a in answers if counts[a] == 1) / len(answers)


@dataclass
class _MicroCtx:
    """What a micro-batch loss needs of its group (avoids closures over loop variables)."""

    group: Group
    adv: torch.Tensor  # (N,)
    old_lp: torch.Tensor  # (N, T_g)
    is_w: torch.Tensor | None  # (N, T_g)
    ref_lp: torch.Tensor | None  # (N, T_g)
    device: torch.device
    denominators: dict[str, float]


@dataclass(frozen=True)
class GroupRef:
    """What every rank knows of an informative group: its stream key, the step that made it, the rank holding it."""

    key: int
    step: int
    home: int


@dataclass
class CollectStats:
    """Counters of one step's collect stage (all rounds)."""

    rounds: int = 0
    groups_generated: int = 0
    groups_informative: int = 0
    from_surplus: int = 0
    dropped_stale: int = 0
    samples: int = 0
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.metrics.setdefault(k, []).append(float(v))


class _KeyOffset:
    """A rollout engine seen through shifted prompt keys: a rank's share of a list samples as in the whole list."""

    def __init__(self, engine: Any, offset: int) -> None:
        self.engine, self.offset = engine, offset

    def generate(self, prompts, n, params, *, prompt_keys=None):
        keys = range(len(prompts)) if prompt_keys is None else prompt_keys
        return self.engine.generate(prompts, n, params, prompt_keys=[k + self.offset for k in keys])


class Trainer:
    """Owns the policy, the optimizer, the reference policy and the run state; ``run()`` trains."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        resume: Path | None = None,
        console: Any = None,
        dist: Dist | None = None,
    ) -> None:
        from brorl.trainer.setup import build_components, pick_device

        self.cfg = cfg
        self.dist = dist if dist is not None else Dist(device=pick_device(cfg.device))
        if cfg.prompts_per_step % self.dist.world_size:
            raise ConfigError(
                f"--prompts-per-step ({cfg.prompts_per_step}) must be divisible by the number of ranks "
                f"({self.dist.world_size}) so every rank trains on the same number of prompts; change one of them"
            )
        self.fsdp = cfg.sharding == "fsdp"
        if self.fsdp and not self.dist.enabled:
            raise ConfigError(
                "--sharding fsdp shards the model across processes and needs at least 2: launch with "
                "torchrun --nproc_per_node K (K >= 2), or use --sharding none for one process"
            )
        self.console = console if self.dist.is_main else None
        if cfg.prompts_per_step // cfg.mini_batches < self.dist.world_size:
            self._say(
                f"note: a mini-batch has {cfg.prompts_per_step // cfg.mini_batches} prompts for "
                f"{self.dist.world_size} ranks; groups are not split across ranks, so some ranks sit out each "
                "optimizer step (lower --mini-batches to use them all; docs/distributed.md)"
            )
        self.c = build_components(cfg, self.dist.device)  # model, tokenizer, engine, pool, data
        self.model, self.tokenizer = self.c.model, self.c.tokenizer
        self.stream = ProblemStream(self.c.train_problems, cfg.seed)
        self.ref_model = self._make_reference() if cfg.kl_coef > 0 else None
        ckpt = self._checkpoint_to_resume(resume) if resume is not None else None
        if ckpt is not None:
            self._load_weights(ckpt)  # into the full model, before any sharding
        if self.fsdp:
            self._shard()
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.effective_lr,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
        )
        self.step, self.samples, self.wall, self.opt_steps = 0, 0, 0.0, 0
        self.surplus: list[GroupRef] = []  # informative groups kept for later steps, known to every rank
        self.held: dict[int, Group] = {}  # this rank's group records (its surplus, this step's), by key
        self.pass_rate_ema = 0.5
        self.short_batches = 0
        if ckpt is not None:
            self._load_state(ckpt)
        from brorl.tracking import Tracker

        self.tracker = Tracker(
            cfg.out,
            enabled=self.dist.is_main,
            tensorboard=cfg.tensorboard,
            wandb=cfg.wandb,
            config=self._config_dict(),
            resume_step=self.step if resume else None,
        )

    # ----------------------------------------------------------------- the step
    def train_step(self) -> dict[str, float]:
        """One RL step: collect → score → filter → advantage → update. Returns its metrics."""
        t0 = time.perf_counter()
        groups, metrics = self.collect()  # this rank's share of the batch; scoring and filtering included
        batch_size = int(metrics["filter/groups_kept"])  # over all ranks
        if batch_size:
            adv, adv_metrics = self.advantage(groups)
            metrics |= adv_metrics
            metrics |= self.update(groups, adv, batch_size=batch_size)
        else:
            metrics["loss/skipped_empty_batch"] = 1.0
        self.step += 1
        if (
            self.ref_model is not None
            and self.cfg.ref_reset_every
            and self.step % self.cfg.ref_reset_every == 0
        ):
            self.ref_model.load_state_dict(self.model.state_dict())
            metrics["policy/ref_reset"] = 1.0
        metrics["perf/step_seconds"] = time.perf_counter() - t0
        metrics["perf/samples_per_second"] = (
            metrics.get("rollout/num_samples", 0.0) / metrics["perf/step_seconds"]
        )
        return metrics

    # ----------------------------------------------------------------- collect, score, filter
    def collect(self) -> tuple[list[Group], dict[str, float]]:
        """Fill a batch of B informative groups: kept surplus first, then generation rounds (dynamic sampling).

        Returns this rank's share of the batch (all of it in one process, in stream order) and the metrics. Every
        rank takes the same prompts from the stream and makes the same decisions, so the batch and the surplus are
        those of a one-process run whatever the number of ranks.
        """
        cfg, need = self.cfg, self.cfg.prompts_per_step
        st = CollectStats()
        kept = [r for r in self.surplus if self.step - r.step <= cfg.max_surplus_age]
        st.dropped_stale, st.from_surplus = len(self.surplus) - len(kept), len(kept)
        self.surplus = []
        with gathered(self.model):  # FSDP: full weights for generation on every rank, rounds in lock-step
            while len(kept) < need and st.rounds <= cfg.max_refill_rounds:
                missing = need - len(kept)
                # refills ask for enough prompts to fill the gap at the recent pass rate (at most 4× the gap)
                k = (
                    missing
                    if st.rounds == 0
                    else min(4 * missing, math.ceil(missing / max(self.pass_rate_ema, 0.25)))
                )
                kept += self._round(self.stream.take(k), st)
                st.rounds += 1
        if len(kept) > need:
            self.surplus = kept[need:] if cfg.keep_surplus else []
            kept = kept[:need]
        mine = self._take_share(kept)
        return mine, self._collect_metrics(st, kept, mine)

    def _round(self, items: list[tuple[int, Any]], st: CollectStats) -> list[GroupRef]:
        """One generation round: this rank scores its share of ``items``; returns every rank's informative groups.

        One collective per round carries each rank's counts, informative keys and metrics (a few hundred bytes);
        the group records stay where they were made until ``_take_share``.
        """
        d = self.dist
        local = CollectStats()
        part = items[shard(len(items), d.rank, d.world_size)]
        groups = self.score(part, local) if part else []
        useful = self.filter(groups)
        self.held.update((g.key, g) for g in useful)
        mine = {k: v[-1] for k, v in local.metrics.items()}
        per_rank = d.all_gather_object((len(groups), [g.key for g in useful], local.samples, mine))
        generated = sum(x[0] for x in per_rank)
        refs = sorted(
            (GroupRef(key, self.step, r) for r, x in enumerate(per_rank) for key in x[1]), key=lambda g: g.key
        )
        if generated and self.cfg.dynamic_sampling:
            self.pass_rate_ema = 0.8 * self.pass_rate_ema + 0.2 * len(refs) / generated
        st.add(combine_metrics([(x[3], float(x[0])) for x in per_rank]))
        st.samples += sum(x[2] for x in per_rank)
        st.groups_generated += generated
        st.groups_informative += len(refs)
        return refs

    def _take_share(self, kept: list[GroupRef]) -> list[Group]:
        """This rank's groups of the batch (``batch_plan``); records move only from the rank that made them."""
        d = self.dist
        plan = batch_plan(len(kept), self.cfg.mini_batches, d.world_size)
        owner = {kept[i].key: r for mini in plan for r, idx in enumerate(mini) for i in idx}
        outgoing: list[list[Group]] = [[] for _ in range(d.world_size)]
        for ref in kept:
            if ref.home == d.rank and owner[ref.key] != d.rank:
                outgoing[owner[ref.key]].append(self.held[ref.key])
        received = {g.key: g for g in d.exchange(outgoing)} if d.enabled else {}
        keys = [kept[i].key for mini in plan for i in mini[d.rank]]
        mine = [self.held[k] if k in self.held else received[k] for k in keys]
        still_held = {r.key for r in self.surplus if r.home == d.rank}
        self.held = {k: g for k, g in self.held.items() if k in still_held}
        return mine

    def score(self, items: list[tuple[int, Any]], st: CollectStats) -> list[Group]:
        """Generate N rollouts for each (key, problem) and score them; returns one Group per prompt."""
        from brorl.data import format_prompt
        from brorl.rollout import SamplingParams

        cfg = self.cfg
        prompts = [
            format_prompt(p, self.tokenizer, template=cfg.template, answer_format=cfg.answer_format)
            for _, p in items
        ]
        params = SamplingParams(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            seed=cfg.seed,
        )
        self.model.eval()
        batch = self.c.engine.generate(prompts, cfg.rollouts, params, prompt_keys=[k for k, _ in items])
        problems = [p for _, p in items]
        result = self.c.pool.score(problems, batch.response_text, cfg.rollouts, batch.finish_reason)
        st.samples += len(batch.response_text)
        st.add(batch.stats.metrics() | result.metrics)
        n = cfg.rollouts
        rewards = torch.as_tensor(result.rewards, dtype=torch.float32).view(-1, n)
        correct = torch.as_tensor(result.correct, dtype=torch.bool).view(-1, n)
        lengths = batch.response_lengths.view(-1, n)
        groups = []
        for b, (key, problem) in enumerate(items):
            rows = slice(b * n, (b + 1) * n)
            t = max(int(lengths[b].max()), 1)
            groups.append(
                Group(
                    key=key,
                    problem=problem,
                    prompt_ids=batch.prompt_ids[b].cpu(),
                    response_ids=batch.response_ids[rows, :t].cpu(),
                    mask=batch.response_mask[rows, :t].cpu(),
                    rollout_logp=batch.logprobs[rows, :t].cpu(),
                    rewards=rewards[b],
                    correct=correct[b],
                    step=self.step,
                )
            )
        answers = result.answers
        st.add(
            {
                "rollout/unseen_mass": sum(
                    good_turing_unseen(answers[b * n : (b + 1) * n]) for b in range(len(items))
                )
                / max(len(items), 1),
            }
        )
        return groups

    def filter(self, groups: list[Group]) -> list[Group]:
        """Dynamic sampling: keep groups whose rewards differ (0 < correct < N for binary rewards)."""
        if not groups or not self.cfg.dynamic_sampling:
            return groups
        keep = informative_groups(torch.stack([g.rewards for g in groups]))
        return [g for g, k in zip(groups, keep.tolist(), strict=True) if k]

    def _collect_metrics(self, st: CollectStats, kept: list[GroupRef], mine: list[Group]) -> dict[str, float]:
        need = self.cfg.prompts_per_step
        if len(kept) < need:
            self.short_batches += 1
            self._say(
                f"step {self.step}: only {len(kept)} of {need} prompts had mixed rewards after "
                f"{st.rounds} rounds; training on those (raise --max-refill-rounds to try harder)"
            )
        self.samples += st.samples
        out = {k: sum(v) / len(v) for k, v in st.metrics.items()}
        for k in (
            "rollout/num_samples",
            "rollout/tokens_generated",
            "perf/rollout_seconds",
            "perf/scoring_seconds",
        ):
            if k in st.metrics:
                out[k] = sum(st.metrics[k])
        out |= {
            "filter/pass_rate": st.groups_informative / max(st.groups_generated, 1),
            "filter/rounds": float(st.rounds),
            "filter/groups_generated": float(st.groups_generated),
            "filter/groups_kept": float(len(kept)),
            "filter/from_surplus": float(st.from_surplus),
            "filter/surplus_kept": float(len(self.surplus)),
            "filter/dropped_stale": float(st.dropped_stale),
            "filter/short_batch": float(len(kept) < need),
        }
        total = self.dist.sum(
            torch.tensor(
                [
                    sum(float(g.rewards.double().sum()) for g in mine),
                    float(sum(g.rewards.numel() for g in mine)),
                ],
                dtype=torch.float64,
            )
        )
        out["reward/batch_mean"] = float(total[0] / total[1]) if total[1] > 0 else 0.0
        return out

    # ----------------------------------------------------------------- advantage
    def advantage(self, groups: list[Group]) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-rollout advantages (B*N,) of this rank's groups, whitened over the global batch."""
        n, d = self.cfg.rollouts, self.dist
        rewards = torch.stack([g.rewards for g in groups]) if groups else torch.empty(0, n)  # (B, N)
        counts = torch.stack([g.mask.sum(1) for g in groups]) if groups else torch.empty(0, n)  # (B, N)
        adv, metrics = compute_advantages(rewards, self.cfg.advantage, token_counts=counts, all_reduce=d.sum)
        if d.enabled:  # the same statistics over the global batch
            a = adv.double()
            s = d.sum(
                torch.stack([a.sum(), (a * a).sum(), torch.tensor(float(a.numel()), dtype=torch.float64)])
            )
            top = d.all_reduce(a.abs().max() if a.numel() else torch.zeros((), dtype=torch.float64), "max")
            mean = s[0] / s[2]
            var = (s[1] - s[2] * mean**2) / (s[2] - 1) if s[2] > 1 else torch.zeros(())
            metrics = {
                "adv/max_abs": float(top),
                "adv/mean": float(mean),
                "adv/std": float(var.clamp(min=0).sqrt()),
            }
        return adv, metrics

    # ----------------------------------------------------------------- update
    def update(
        self, groups: list[Group], adv: torch.Tensor, *, batch_size: int | None = None
    ) -> dict[str, float]:
        """PPO clipped updates: ``mini_batches`` optimizer steps over the groups, micro-batched by tokens.

        ``groups`` are this rank's share of a batch of ``batch_size`` groups (default: all of it, one process), laid
        out as ``batch_plan`` says: this rank's part of mini-batch 0, then of mini-batch 1, ...
        """
        cfg, n, d = self.cfg, self.cfg.rollouts, self.dist
        t0 = time.perf_counter()
        old = self._old_logprobs(groups)
        ref = self._reference_logprobs(groups)
        sums: Counter[str] = Counter()
        plan = batch_plan(len(groups) if batch_size is None else batch_size, cfg.mini_batches, d.world_size)
        n_mini, start = len(plan), 0
        for mini in plan:
            idx = list(range(start, start + len(mini[d.rank])))
            start += len(idx)
            self._optimizer_step(
                [groups[i] for i in idx],
                [adv[i * n : (i + 1) * n] for i in idx],
                [old[i] for i in idx],
                [ref[i] for i in idx],
                sums,
            )
        sums = self._reduce_sums(sums)
        tokens = max(sums["tokens"], 1.0)
        return {
            "loss/policy": sums["pg"] / max(n_mini, 1),
            "loss/kl": sums["kl"] / tokens,
            "policy/entropy": sums["entropy"] / tokens,
            "loss/clip_frac": sums["clipped"] / tokens,
            "loss/ratio_max": sums["ratio_max"],
            "loss/is_weight_mean": 1.0 if cfg.reuse_rollout_logprobs else sums["is_w"] / tokens,
            "loss/skipped_nonfinite": sums["skipped"],
            "policy/grad_norm": sums["grad_norm"] / max(n_mini, 1),
            "policy/lr": self.opt.param_groups[0]["lr"],
            "perf/update_seconds": time.perf_counter() - t0,
            "perf/train_tokens": sums["tokens"],
        }

    def _reduce_sums(self, sums: Counter) -> Counter:
        """Loss statistics over all ranks: sums add up, the largest ratio is the largest of any rank."""
        if not self.dist.enabled:
            return sums
        keys = ("pg", "kl", "entropy", "clipped", "is_w", "tokens")
        total = self.dist.sum(torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64))
        out = Counter(sums)
        for k, v in zip(keys, total.tolist(), strict=True):
            out[k] = v
        ratio = self.dist.all_reduce(torch.tensor(float(sums["ratio_max"]), dtype=torch.float64), "max")
        out["ratio_max"] = float(ratio)
        return out

    def _old_logprobs(self, groups: list[Group]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(old log-probs, TIS weights) per group: the engine's when valid, else the trainer's with TIS."""
        if self.cfg.reuse_rollout_logprobs:
            return [(g.rollout_logp, None) for g in groups]
        out = []
        with gathered(self.model):
            for g in groups:
                lp = self._scored_logprobs(self.model, g)
                out.append((lp, truncated_is_weights(lp, g.rollout_logp, g.mask, self.cfg.tis_cap)))
        return out

    def _reference_logprobs(self, groups: list[Group]) -> list[torch.Tensor | None]:
        if self.ref_model is None:
            return [None] * len(groups)
        with gathered(self.ref_model):
            return [self._scored_logprobs(self.ref_model, g) for g in groups]

    def _scored_logprobs(self, model, g: Group) -> torch.Tensor:
        """(N, T_g) log-probs of a group's responses under ``model`` at the training temperature, no gradient."""
        lp, _ = group_logprobs(
            model,
            g.prompt_ids,
            g.response_ids,
            g.mask,
            temperature=self.cfg.temperature,
            rows_per_micro=self._rows_per_micro(g),
        )
        return lp.cpu()

    def _rows_per_micro(self, g: Group) -> int:
        return max(1, self.cfg.micro_batch_tokens // max(g.response_ids.shape[1], 1))

    def _optimizer_step(self, groups, advs, olds, refs, sums: Counter) -> None:
        """One optimizer step on a mini-batch of groups; the loss is normalised by its global token count.

        In a distributed run ``groups`` is this rank's part of the mini-batch (possibly none): the denominators are
        taken over all ranks, and the gradients summed across ranks before clipping (all-reduced; with FSDP
        reduce-scattered, each rank keeping its shard).
        """
        d = self.dist
        counts = d.sum(
            torch.tensor(
                [sum(g.num_tokens for g in groups), sum(g.mask.shape[0] for g in groups)], dtype=torch.float64
            )
        )
        longest = d.all_reduce(torch.tensor(max((g.mask.shape[1] for g in groups), default=0)), "max")
        denominators = {"num_tokens": float(counts[0]), "num_seqs": float(counts[1]), "max_len": int(longest)}
        device = next(self.model.parameters()).device
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        # FSDP: full weights for this mini-batch; no collective inside, whatever this rank's number of passes
        with gathered(self.model) as phase:
            for g, a, (old_lp, is_w), ref_lp in zip(groups, advs, olds, refs, strict=True):
                ctx = _MicroCtx(g, a, old_lp, is_w, ref_lp, device, denominators)
                group_logprobs(
                    self.model,
                    g.prompt_ids,
                    g.response_ids,
                    g.mask,
                    temperature=self.cfg.temperature,
                    rows_per_micro=self._rows_per_micro(g),
                    want_entropy=self.cfg.entropy_coef > 0,  # the full entropy costs a pass over V per token
                    loss_fn=functools.partial(self._micro_loss, ctx, sums),
                )
            # summed: each rank's loss already has the global divisor
            if self.fsdp:
                phase.reduce_scatter_gradients(d.sum)  # once per optimizer step; each rank keeps its shard
            else:
                d.all_reduce_gradients(self.model.parameters())
        self._apply_gradients(sums)
        self.model.eval()

    def _micro_loss(
        self, ctx: _MicroCtx, sums: Counter, rows: slice, logp: torch.Tensor, ent: torch.Tensor | None
    ) -> torch.Tensor:
        """Policy loss + KL − entropy bonus of one micro-batch of a group's rows (a scalar to back-propagate)."""
        cfg, dev, den = self.cfg, ctx.device, ctx.denominators
        mask = ctx.group.mask[rows].to(dev)
        w = None if ctx.is_w is None else ctx.is_w[rows].to(dev)
        pg, info = policy_loss(
            logp,
            ctx.old_lp[rows].to(dev),
            ctx.adv[rows].to(dev),
            mask,
            eps_low=cfg.eps_low,
            eps_high=cfg.eps_high,
            dual_clip=cfg.dual_clip,
            is_weights=w,
        )
        loss = aggregate(pg, mask, cfg.loss_aggregation, **den)
        sums["pg"] += float(loss.detach())
        if ctx.ref_lp is not None:
            kl = kl_penalty(logp, ctx.ref_lp[rows].to(dev), cfg.kl_estimator, cfg.kl_clamp).masked_fill(
                ~mask, 0
            )
            loss = loss + cfg.kl_coef * kl.sum() / den["num_tokens"]
            sums["kl"] += float(kl.detach().sum())
        if ent is not None:
            ent = ent.masked_fill(~mask, 0)
            sums["entropy"] += float(ent.detach().sum())
            loss = loss - cfg.entropy_coef * ent.sum() / den["num_tokens"]
        else:  # on-policy samples: −log π(sampled token) is an unbiased estimate of the entropy
            sums["entropy"] += float(-(logp.detach() * mask).sum())
        sums["clipped"] += float(info["clipped"].sum())
        if mask.any():
            sums["ratio_max"] = max(sums["ratio_max"], float(info["ratio"][mask].max()))
        if w is not None:
            sums["is_w"] += float(w.sum())
        sums["tokens"] += float(mask.sum())
        if not torch.isfinite(loss):
            sums["nonfinite_loss"] += 1
        return loss

    def _apply_gradients(self, sums: Counter) -> None:
        cfg = self.cfg
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a replicated DTensor
        if not torch.isfinite(norm):
            self.opt.zero_grad(
                set_to_none=True
            )  # a non-finite loss or gradient: skip this step, say so, go on
            sums["skipped"] += 1
            self._say(f"step {self.step}: non-finite gradient norm; skipped this optimizer step")
            return
        for group in self.opt.param_groups:
            group["lr"] = cfg.effective_lr * warmup_factor(self.opt_steps, cfg.warmup_steps)
        self.opt.step()
        self.opt_steps += 1
        sums["grad_norm"] += float(norm)

    # ----------------------------------------------------------------- evaluate and checkpoint
    def evaluate(self) -> dict[str, float]:
        """Held-out pass@1 (and per task) over ``eval_samples`` samples per instance.

        Distributed: each rank evaluates a contiguous share of the held-out instances, sampling with their global
        indices as keys, and the records are gathered; the result equals a one-process evaluation.
        """
        from brorl.eval import summary_metrics
        from brorl.eval.runner import evaluate_problems
        from brorl.rollout import SamplingParams

        cfg = self.cfg
        if not self.c.eval_problems:
            return {}
        t0 = time.perf_counter()
        self.model.eval()
        params = SamplingParams(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.eval_temperature,
            top_p=cfg.eval_top_p,
            seed=cfg.seed + 7919,
        )
        part = shard(len(self.c.eval_problems), self.dist.rank, self.dist.world_size)
        records = []
        with gathered(self.model):  # every rank, also one with no instance: FSDP gathers collectively
            if part.stop > part.start:
                records = evaluate_problems(
                    self.c.eval_problems[part],
                    self.c.eval_prompts[part],
                    _KeyOffset(self.c.engine, part.start),
                    self.c.pool,
                    cfg.eval_samples,
                    params,
                    prompts_per_call=16,
                )
        records = [r for rank_records in self.dist.all_gather_object(records) for r in rank_records]
        return summary_metrics(records) | {"perf/eval_seconds": time.perf_counter() - t0}

    def checkpoint(self) -> Path | None:
        """Save the run (rank 0 writes; every rank sends it its surplus records). Returns the path on rank 0.

        With FSDP every rank first takes part in gathering the full (unsharded) policy, optimizer state and
        reference on rank 0, which writes them in the format of an unsharded run.
        """
        from brorl.checkpoint import save_checkpoint

        d = self.dist
        parts = d.gather_object([self.held[r.key] for r in self.surplus if r.home == d.rank])
        policy_state = optim_state = ref = None
        if self.fsdp:
            from brorl.sharding import full_model_state, full_optimizer_state

            policy_state = full_model_state(self.model)
            optim_state = full_optimizer_state(self.model, self.opt)
            ref = None if self.ref_model is None else full_model_state(self.ref_model)
        if not d.is_main:
            d.barrier()
            return None
        surplus = sorted((g for part in parts for g in part), key=lambda g: g.key)
        state = {
            "step": self.step,
            "samples": self.samples,
            "wall": self.wall,
            "opt_steps": self.opt_steps,
            "optimizer": optim_state if self.fsdp else self.opt.state_dict(),
            "stream_position": self.stream.position,
            "surplus": surplus,
            "pass_rate_ema": self.pass_rate_ema,
            "short_batches": self.short_batches,
            "torch_rng": torch.get_rng_state(),
            "config": self._config_dict(),
        }
        if not self.fsdp:
            ref = None if self.ref_model is None else self.ref_model.state_dict()
        path = save_checkpoint(
            self.cfg.out,
            self.step,
            model=self.model,
            tokenizer=self.tokenizer,
            trainer_state=state,
            reference_state=ref,
            keep_last=self.cfg.keep_checkpoints,
            model_state=policy_state,
        )
        d.barrier()  # no rank runs ahead (or exits) before the checkpoint is on disk
        return path

    def _checkpoint_to_resume(self, run_dir: Path) -> Path:
        from brorl.checkpoint import latest_checkpoint

        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"no complete checkpoint under {run_dir}/checkpoints to resume from")
        return ckpt

    def _load_weights(self, ckpt: Path) -> None:
        """The policy's and the reference's weights from a checkpoint, into the full (not yet sharded) models."""
        from safetensors.torch import load_file

        from brorl.checkpoint import load_reference_state

        weights = {}
        for f in sorted((ckpt / "policy").glob("*.safetensors")):
            weights |= load_file(str(f))
        missing, _ = self.model.load_state_dict(weights, strict=False)
        if [k for k in missing if not k.endswith("lm_head.weight")]:
            raise ValueError(f"checkpoint {ckpt} lacks weights {missing[:5]}; is it from another model?")
        if "lm_head.weight" in missing and getattr(self.model.config, "tie_word_embeddings", False):
            self.model.tie_weights()
        ref = load_reference_state(ckpt)
        if self.ref_model is not None and ref is not None:
            self.ref_model.load_state_dict(ref, strict=False)

    def _load_state(self, ckpt: Path) -> None:
        """Optimizer, counters, surplus groups and RNG from a checkpoint (after the optimizer is built)."""
        from brorl.checkpoint import load_trainer_state

        state = load_trainer_state(ckpt)
        if self.fsdp:  # the full state on every rank; each keeps its shard
            from brorl.sharding import load_optimizer_state

            load_optimizer_state(self.model, self.opt, state["optimizer"])
        else:
            self.opt.load_state_dict(state["optimizer"])
        self.step, self.samples, self.wall = state["step"], state["samples"], state["wall"]
        self.opt_steps, self.stream.position = state["opt_steps"], state["stream_position"]
        # every rank reads the same surplus records and holds every world_size-th one
        d, surplus = self.dist, sorted(state["surplus"], key=lambda g: g.key)
        self.surplus = [GroupRef(g.key, g.step, i % d.world_size) for i, g in enumerate(surplus)]
        self.held = {g.key: g for i, g in enumerate(surplus) if i % d.world_size == d.rank}
        self.pass_rate_ema = state["pass_rate_ema"]
        self.short_batches = state.get("short_batches", 0)
        torch.set_rng_state(state["torch_rng"])
        self._say(f"resumed from {ckpt} at step {self.step}")

    def _shard(self) -> None:
        """FSDP: shard the policy and the reference (one unit per decoder layer plus the root) across the ranks."""
        from brorl.sharding import shard_model

        d = self.dist
        shard_model(self.model, d.device, d.world_size)
        if self.ref_model is not None:
            shard_model(self.ref_model, d.device, d.world_size)
        self._say(
            f"FSDP: policy{' and reference' if self.ref_model is not None else ''} sharded over {d.world_size} "
            "ranks; full weights are gathered for generation and each mini-batch's passes"
        )

    def _make_reference(self):
        ref = copy.deepcopy(self.model).eval()
        ref.requires_grad_(False)
        return ref

    def _config_dict(self) -> dict[str, Any]:
        from brorl.config import to_dict

        return to_dict(self.cfg)

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    # ----------------------------------------------------------------- the run
    def run(self, on_step=None) -> list[dict[str, float]]:
        """Train until ``cfg.steps``; evaluate and checkpoint on schedule. ``on_step(step, metrics)`` per step."""
        cfg, history = self.cfg, []
        if self.step == 0 and cfg.eval_every:
            self._log(self.evaluate())
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            metrics = self.train_step()
            if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                metrics |= self.evaluate()
            self.wall += time.perf_counter() - t0
            self._log(metrics)
            history.append(metrics)
            if on_step is not None:
                on_step(self.step, metrics)
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.checkpoint()
        return history

    def _log(self, metrics: dict[str, float]) -> None:
        if metrics:
            self.tracker.log(self.step, {"samples": self.samples, "wall_time": round(self.wall, 3)} | metrics)

    def close(self) -> None:
        self.tracker.close()
        self.c.pool.close()
