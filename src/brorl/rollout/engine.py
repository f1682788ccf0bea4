"""The large-N rollout engine for Hugging Face causal LMs: one prefill per prompt, N samples, bounded memory.

``HFRolloutEngine(model, tokenizer).generate(prompts, n, SamplingParams(...))`` returns a :class:`RolloutBatch`
of B*N rollouts (prompt-major). The work is cut into chunks (:func:`plan_chunks`) that respect a budget of
sequences and KV-cache tokens in flight, so peak memory depends on the budget, not on N or B. Each chunk:

1. prefills its prompts once (right-padded, one forward);
2. draws the first token of every rollout from its prompt's last-position logits;
3. decodes all live rollouts together, one forward per position, and drops finished rollouts from the batch
   (in batches: when at least 1/8 of the rows have finished, so the KV copy is amortised).

KV modes: ``"shared"`` stores each prompt's keys/values once and shares the attention over them
(:mod:`brorl.rollout.attention`); ``"expand"`` uses the model's own cache copied N times along the batch, for
models whose attention does not go through transformers' ``AttentionInterface``. ``"auto"`` picks ``"shared"``
when the model supports it. Design notes: docs/rollout.md.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from contextlib import contextmanager

import torch

from brorl.rollout.attention import ATTN_NAME, SharedPrefixKV, register
from brorl.rollout.sampling import SamplingWorkspace, counter_uniforms, sample_tokens
from brorl.rollout.types import FinishReason, Prompt, RolloutBatch, RolloutStats, SamplingParams

KV_MODES = ("auto", "shared", "expand")
# A chunk piece: (prompt index b, first sample, end sample) of one prompt's rollouts.
Piece = tuple[int, int, int]


def plan_chunks(
    prompt_lengths: Sequence[int], n: int, max_new_tokens: int, max_seqs: int, max_tokens: int
) -> list[list[Piece]]:
    """Cut B prompts × n rollouts into chunks, in prompt-major order.

    A chunk holds at most ``max_seqs`` sequences and at most ``max_tokens`` KV-cache tokens, counting each prompt
    once (its keys/values are shared) plus ``max_new_tokens`` per sequence. A prompt whose rollouts do not fit in
    one chunk is split across consecutive chunks (and prefilled once in each).

    Returns:
        chunks: each a list of ``(b, start, end)`` pieces.
    """
    chunks: list[list[Piece]] = []
    current: list[Piece] = []
    seqs = tokens = 0
    for b, plen in enumerate(prompt_lengths):
        start = 0
        while start < n:
            room = min(max_seqs - seqs, (max_tokens - tokens - plen) // max_new_tokens)
            if room <= 0:
                if not current:
                    raise ValueError(
                        f"prompt {b} ({plen} tokens) plus one response of {max_new_tokens} tokens does not fit "
                        f"max_tokens={max_tokens}; raise max_tokens to at least {plen + max_new_tokens}"
                    )
                chunks.append(current)
                current, seqs, tokens = [], 0, 0
                continue
            take = min(room, n - start)
            current.append((b, start, start + take))
            seqs += take
            tokens += plen + take * max_new_tokens
            start += take
    if current:
        chunks.append(current)
    return chunks


class HFRolloutEngine:
    """A :class:`~brorl.rollout.types.RolloutBackend` for any ``AutoModelForCausalLM`` and its tokenizer.

    Args:
        model: a causal LM (put it in eval mode and on its device yourself; the engine never changes its weights).
        tokenizer: its tokenizer; used to decode responses, detect stop strings and find EOS / padding ids.
        max_seqs: most sequences decoded together (the decode batch size).
        max_tokens: most KV-cache tokens in flight per chunk (prompts counted once, plus max_new_tokens per
            sequence in ``"shared"`` mode; prompt + max_new_tokens per sequence in ``"expand"`` mode).
        kv_mode: ``"auto"``, ``"shared"`` or ``"expand"`` (see the module docstring).
    """

    def __init__(
        self, model, tokenizer, *, max_seqs: int = 512, max_tokens: int = 1 << 18, kv_mode: str = "auto"
    ) -> None:
        if max_seqs < 1 or max_tokens < 2:
            raise ValueError(f"max_seqs must be >= 1 and max_tokens >= 2, got {max_seqs}, {max_tokens}")
        if kv_mode not in KV_MODES:
            raise ValueError(f"unknown kv_mode {kv_mode!r}; valid: {', '.join(KV_MODES)}")
        supports_shared = bool(getattr(model, "_supports_attention_backend", False))
        if kv_mode == "shared" and not supports_shared:
            raise ValueError(
                f"{type(model).__name__} does not dispatch attention through AttentionInterface; "
                "use kv_mode='expand' (or 'auto')"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.max_seqs = max_seqs
        self.max_tokens = max_tokens
        self.kv_mode = ("shared" if supports_shared else "expand") if kv_mode == "auto" else kv_mode
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad) if pad is not None else 0

    def generate(
        self,
        prompts: Sequence[Prompt],
        n: int,
        params: SamplingParams,
        *,
        prompt_keys: Sequence[int] | None = None,
    ) -> RolloutBatch:
        """Sample ``n`` rollouts for each prompt.

        Args:
            prompts: B prompts, each text (encoded as-is, no special tokens added: apply the chat template first)
                or token ids.
            n: rollouts per prompt N (>= 1).
            params: sampling options.
            prompt_keys: B global prompt ids keying the random streams (default ``0..B-1``). Two calls that give
                a prompt the same key, seed and sample index draw the same rollout.

        Returns:
            A :class:`RolloutBatch` with B*N prompt-major rows.
        """
        t0 = time.perf_counter()
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n (rollouts per prompt) must be an integer >= 1, got {n!r}")
        if not isinstance(params, SamplingParams):
            raise ValueError(
                f"params must be a SamplingParams, got {type(params).__name__}; "
                "build one with SamplingParams.from_dict(...)"
            )
        prompt_ids = self._encode(prompts, params.max_new_tokens)
        keys = list(range(len(prompt_ids))) if prompt_keys is None else [int(k) for k in prompt_keys]
        if len(keys) != len(prompt_ids) or any(k < 0 for k in keys):
            raise ValueError(f"prompt_keys must be {len(prompt_ids)} non-negative integers, got {len(keys)}")
        budget_prefix = self.kv_mode == "expand"  # expand mode stores the prompt once per sequence
        lengths = [len(p) for p in prompt_ids]
        chunks = plan_chunks(
            [0] * len(lengths) if budget_prefix else lengths,
            n,
            params.max_new_tokens + (max(lengths) if budget_prefix else 0),
            self.max_seqs,
            self.max_tokens,
        )
        stats = RolloutStats(num_prompts=len(prompt_ids), num_samples=len(prompt_ids) * n, chunks=len(chunks))
        stop_ids = self._stop_token_ids(params)
        results = []
        # Buffers reused by every step and chunk of this call, freed when it returns: the sampler's (S, V)
        # intermediates and the suffix KV stores (a fresh allocation per step or chunk costs page faults).
        workspace, pool = SamplingWorkspace(), {}
        with torch.inference_mode(), self._attention():
            for pieces in chunks:
                results.append(
                    self._run_chunk(pieces, prompt_ids, keys, params, stop_ids, stats, workspace, pool)
                )
        batch = self._assemble(results, prompt_ids, n, stats)
        stats.seconds = time.perf_counter() - t0
        return batch

    # ----------------------------------------------------------------- input checks
    def _encode(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[torch.Tensor]:
        if isinstance(prompts, (str, torch.Tensor)) or len(prompts) == 0:
            raise ValueError("prompts must be a non-empty list of prompts (strings or token-id lists)")
        context = getattr(self.model.config, "max_position_embeddings", None)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        out = []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                ids = torch.tensor(
                    self.tokenizer(prompt, add_special_tokens=False)["input_ids"], dtype=torch.long
                )
            else:
                ids = torch.as_tensor(prompt, dtype=torch.long).flatten().cpu()
            if ids.numel() == 0:
                raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
            if int(ids.min()) < 0 or int(ids.max()) >= vocab:
                raise ValueError(f"prompt {i} has token ids outside the model's vocabulary [0, {vocab})")
            if context is not None and ids.numel() + max_new_tokens > context:
                raise ValueError(
                    f"prompt {i} has {ids.numel()} tokens; with max_new_tokens={max_new_tokens} that exceeds the "
                    f"model's context of {context} tokens: shorten the prompt or lower max_new_tokens"
                )
            out.append(ids)
        return out

    def _stop_token_ids(self, params: SamplingParams) -> torch.Tensor:
        ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            for source in (
                self.tokenizer.eos_token_id,
                getattr(self.model.generation_config, "eos_token_id", None),
            ):
                if source is not None:
                    ids.update([source] if isinstance(source, int) else source)
        return torch.tensor(sorted(ids), dtype=torch.long)

    @contextmanager
    def _attention(self):
        """Switch the model to shared-prefix attention for the duration of one call (shared mode only)."""
        if self.kv_mode != "shared":
            yield
            return
        register()
        previous = self.model.config._attn_implementation
        self.model.config._attn_implementation = ATTN_NAME
        try:
            yield
        finally:
            self.model.config._attn_implementation = previous

    # ----------------------------------------------------------------- one chunk
    def _run_chunk(
        self,
        pieces: list[Piece],
        prompt_ids: list[torch.Tensor],
        keys: list[int],
        params: SamplingParams,
        stop_ids: torch.Tensor,
        stats: RolloutStats,
        workspace: SamplingWorkspace,
        pool: dict,
    ) -> _ChunkResult:
        """Prefill the chunk's prompts once, then decode all its rollouts; returns their tokens and log-probs."""
        t0 = time.perf_counter()
        prompts = [prompt_ids[b] for b, _, _ in pieces]
        lengths = torch.tensor([len(p) for p in prompts])  # (G,)
        row_group = torch.cat([torch.full((e - s,), g) for g, (_, s, e) in enumerate(pieces)])  # (R,)
        row_sample = torch.cat([torch.arange(s, e) for _, s, e in pieces])  # (R,)
        row_key = torch.tensor([keys[b] for b, _, _ in pieces])[row_group]  # (R,)
        runner_cls = _SharedRunner if self.kv_mode == "shared" else _ExpandRunner
        runner = runner_cls(self.model, self.device, self.pad_token_id, params.max_new_tokens, pool)
        logits = runner.prefill(prompts, lengths, row_group)  # (R, V)
        stats.prompt_tokens += int(lengths.sum())
        t1 = time.perf_counter()
        stats.prefill_seconds += t1 - t0

        r, t_max = row_group.numel(), params.max_new_tokens
        res = _ChunkResult(pieces, r, t_max, self.pad_token_id)
        active = torch.arange(r)  # chunk row of each batch row
        live = torch.ones(r, dtype=torch.bool)  # batch rows still generating (the others await compaction)
        pos = lengths[row_group]  # (R,) position of the next token fed
        for t in range(t_max):
            u = counter_uniforms(params.seed, row_key[active], row_sample[active], t)
            tok, lp, raw = sample_tokens(
                logits,
                u,
                temperature=params.temperature,
                top_k=params.top_k,
                top_p=params.top_p,
                workspace=workspace,
            )
            rows = active[live]
            res.record(rows, t, tok[live], lp[live], raw[live])
            done = self._finished(res, rows, tok[live], t, params, stop_ids)
            live[live.clone()] = ~done
            if t + 1 == t_max or not bool(live.any()):
                break
            if int((~live).sum()) * 8 >= live.numel():
                keep = live.nonzero()[:, 0]
                runner.keep(keep)
                active, live, tok, pos = active[keep], live[keep], tok[keep], pos[keep]
            stats.peak_active = max(stats.peak_active, active.numel())
            logits = runner.step(tok, pos + t)  # (S, V)
            stats.decode_steps += 1
        stats.tokens_generated += int(res.lengths.sum())
        stats.decode_seconds += time.perf_counter() - t1
        return res

    def _finished(
        self,
        res: _ChunkResult,
        rows: torch.Tensor,
        tok: torch.Tensor,
        t: int,
        params: SamplingParams,
        stop_ids: torch.Tensor,
    ) -> torch.Tensor:
        """(L,) bool: which of the just-extended ``rows`` end here by a stop token or a stop string."""
        done = torch.isin(tok, stop_ids) if stop_ids.numel() else torch.zeros_like(tok, dtype=torch.bool)
        if params.stop:
            # Decode only a tail window: a stop string of k characters spans at most k tokens (plus slack for
            # tokens that decode to partial characters), and it is found at the first step it is complete.
            window = max(len(s) for s in params.stop) + 8
            pending = (~done).nonzero()[:, 0]
            tails = res.ids[rows[pending], max(0, t + 1 - window) : t + 1].tolist()
            texts = self.tokenizer.batch_decode(tails, skip_special_tokens=False)
            hits = [
                i
                for i, text in zip(pending.tolist(), texts, strict=True)
                if any(s in text for s in params.stop)
            ]
            done[hits] = True
        res.mark_stopped(rows[done])
        return done

    # ----------------------------------------------------------------- output
    def _assemble(
        self, results: list[_ChunkResult], prompt_ids: list[torch.Tensor], n: int, stats: RolloutStats
    ) -> RolloutBatch:
        """Place every chunk's rows at b*N + s and trim the time axis to the longest response."""
        total = len(prompt_ids) * n
        t = max(int(res.lengths.max()) for res in results)
        ids = torch.full((total, t), self.pad_token_id, dtype=torch.long)
        logprobs = torch.zeros((total, t), dtype=torch.float32)
        raw = torch.zeros((total, t), dtype=torch.float32)
        lengths = torch.zeros(total, dtype=torch.long)
        reasons: list[FinishReason] = ["length"] * total
        for res in results:
            index = torch.cat([torch.arange(b * n + s, b * n + e) for b, s, e in res.pieces])  # (R,)
            ids[index], logprobs[index], raw[index] = res.ids[:, :t], res.logprobs[:, :t], res.raw[:, :t]
            lengths[index] = res.lengths
            for row, reason in zip(index.tolist(), res.reasons, strict=True):
                reasons[row] = reason
        mask = torch.arange(t)[None, :] < lengths[:, None]  # (B*N, T)
        texts = self.tokenizer.batch_decode(
            [row[:k] for row, k in zip(ids.tolist(), lengths.tolist(), strict=True)], skip_special_tokens=True
        )
        return RolloutBatch(
            response_ids=ids,
            response_mask=mask,
            logprobs=logprobs,
            raw_logprobs=raw,
            group_index=torch.arange(len(prompt_ids)).repeat_interleave(n),
            finish_reason=reasons,
            prompt_ids=prompt_ids,
            response_text=texts,
            n=n,
            pad_token_id=self.pad_token_id,
            stats=stats,
        )


class _ChunkResult:
    """Per-chunk output buffers, indexed by chunk row (prompt-major within the chunk)."""

    def __init__(self, pieces: list[Piece], rows: int, t_max: int, pad: int) -> None:
        self.pieces = pieces
        self.ids = torch.full((rows, t_max), pad, dtype=torch.long)
        self.logprobs = torch.zeros((rows, t_max), dtype=torch.float32)
        self.raw = torch.zeros((rows, t_max), dtype=torch.float32)
        self.lengths = torch.zeros(rows, dtype=torch.long)
        self.reasons: list[FinishReason] = ["length"] * rows

    def record(
        self, rows: torch.Tensor, t: int, tok: torch.Tensor, lp: torch.Tensor, raw: torch.Tensor
    ) -> None:
        self.ids[rows, t] = tok
        self.logprobs[rows, t] = lp
        self.raw[rows, t] = raw
        self.lengths[rows] = t + 1

    def mark_stopped(self, rows: torch.Tensor) -> None:
        for row in rows.tolist():
            self.reasons[row] = "stop"


class _SharedRunner:
    """Model calls in shared mode: prompt KV once per prompt, shared-prefix attention at decode."""

    def __init__(self, model, device: torch.device, pad: int, max_new_tokens: int, pool: dict) -> None:
        self.model, self.device, self.pad, self.max_new, self.pool = model, device, pad, max_new_tokens, pool
        self.kv: SharedPrefixKV | None = None

    def prefill(
        self, prompts: list[torch.Tensor], lengths: torch.Tensor, row_group: torch.Tensor
    ) -> torch.Tensor:
        """Forward the G prompts once; returns the next-token logits of each row's prompt, (R, V) float32."""
        g, p = len(prompts), int(lengths.max())
        inp = torch.full((g, p), self.pad, dtype=torch.long)
        for i, ids in enumerate(prompts):
            inp[i, : len(ids)] = ids
        bias = torch.zeros((g, p), device=self.device)
        bias[torch.arange(p)[None, :] >= lengths[:, None]] = float("-inf")  # prompt padding
        self.kv = SharedPrefixKV(
            self.model.config.num_hidden_layers, self.max_new, row_group.to(self.device), bias, pool=self.pool
        )
        last = lengths - 1
        keep = torch.unique(last)  # only positions some prompt ends at reach the LM head
        out = self.model(
            input_ids=inp.to(self.device),
            position_ids=torch.arange(p, device=self.device)[None].expand(g, p),
            use_cache=False,
            brorl_kv=self.kv,
            logits_to_keep=keep.to(self.device),
        )
        first = out.logits[torch.arange(g), torch.searchsorted(keep, last)]  # (G, V)
        self.kv.mode = "decode"
        return first.float().cpu()[row_group]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Feed one token per live row; returns (S, V) float32 next-token logits."""
        out = self.model(
            input_ids=tokens[:, None].to(self.device),
            position_ids=positions[:, None].to(self.device),
            use_cache=False,
            brorl_kv=self.kv,
        )
        self.kv.length += 1
        return out.logits[:, -1].float().cpu()

    def keep(self, rows: torch.Tensor) -> None:
        self.kv.keep(rows.to(self.device))


class _ExpandRunner:
    """Model calls in expand mode: the model's own cache, the prompt's rows copied once per rollout."""

    def __init__(self, model, device: torch.device, pad: int, max_new_tokens: int, pool: dict) -> None:
        from transformers import DynamicCache

        self.model, self.device, self.pad = model, device, pad
        self.cache = DynamicCache()
        # transformers 5 renamed ``past_key_values`` to ``cache``; pass whichever this model's forward takes.
        params = inspect.signature(model.forward).parameters
        self.cache_kw = {("cache" if "cache" in params else "past_key_values"): self.cache}
        self.mask: torch.Tensor | None = None  # (S, P + t) 1 on real tokens

    def prefill(
        self, prompts: list[torch.Tensor], lengths: torch.Tensor, row_group: torch.Tensor
    ) -> torch.Tensor:
        g, p = len(prompts), int(lengths.max())
        inp = torch.full((g, p), self.pad, dtype=torch.long)
        for i, ids in enumerate(prompts):
            inp[i, : len(ids)] = ids
        mask = (torch.arange(p)[None, :] < lengths[:, None]).long()  # (G, P), right padding
        out = self.model(
            input_ids=inp.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=torch.arange(p, device=self.device)[None].expand(g, p),
            use_cache=True,
            **self.cache_kw,
        )
        self.cache.reorder_cache(row_group.to(self.device))  # copy each prompt's KV to its rollouts' rows
        self.mask = mask[row_group].to(self.device)
        return out.logits[torch.arange(g), lengths - 1].float().cpu()[row_group]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        out = self.model(
            input_ids=tokens[:, None].to(self.device),
            attention_mask=self.mask,
            position_ids=positions[:, None].to(self.device),
            use_cache=True,
            **self.cache_kw,
        )
        return out.logits[:, -1].float().cpu()

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.reorder_cache(rows.to(self.device))
        self.mask = self.mask[rows.to(self.device)]
