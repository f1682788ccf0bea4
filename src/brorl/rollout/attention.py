"""Shared-prefix attention: a prompt's keys/values are stored once and read by all of its N rollouts.

How it works. The engine swaps the model's attention implementation (through transformers' ``AttentionInterface``,
so any model whose attention layers dispatch through it works: Llama, Qwen2/3, Mistral, ...) for
:func:`shared_prefix_attention` and runs the model with ``use_cache=False``, passing a :class:`SharedPrefixKV` as an
extra keyword argument that transformers forwards to every attention call. Then:

- prefill: the G prompts of a chunk (right-padded to P) go through causal attention once; their keys/values
  become the per-layer prefix store (keys (G, Hkv, hd, P), values (G, Hkv, P, hd), contiguous).
- decode: each live sequence's new key/value is written in place into a preallocated per-sequence suffix store
  kept in blocks of positions, (blocks, S, Hkv, block, hd), so every block is a contiguous batch of matrices. Its
  query attends to the prefix of its own prompt and to its own suffix with one softmax over both parts, computed
  as two partial softmaxes merged by their log-normalisers. The prefix part is one batched matmul per prompt
  group: the group's queries are laid out as rows (G, Hkv, slots*rep, hd) against (G, Hkv, hd, P), so the prompt
  keys are read once per group instead of once per rollout, and the matmul is a real GEMM rather than N
  matrix-vector products.

No causal mask is needed at decode (one new token per sequence), only a -inf bias on prompt padding. Sliding-window
and logit-softcapping models are rejected here; the engine falls back to expanding a standard cache for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

ATTN_NAME = "brorl_shared_prefix"


def suffix_block_size(max_suffix: int) -> int:
    """Positions per suffix block: 16 (or fewer for very short responses), growing with the response length up to
    128 so that a long response spans at most ~16 blocks (each block costs two small GEMM calls per layer)."""
    if max_suffix <= 16:
        return max(max_suffix, 1)
    return min(128, max(16, 1 << math.ceil(math.log2(max_suffix / 16))))


@dataclass
class SharedPrefixKV:
    """Keys/values of one chunk: prompts once (prefix), responses per sequence (suffix).

    Row bookkeeping: ``group[i]`` is the prompt (0..G-1) of active row i and ``slot[i]`` its place among the
    active rows of that prompt, so ``(group, slot)`` addresses the padded (G, slots) layout used for the prefix.

    Suffix layout: per layer, ``(blocks, rows, Hkv, block, hd)`` with ``block`` positions per block
    (:func:`suffix_block_size`). Each block is one contiguous ``(rows * Hkv, block, hd)`` batch of matrices, which
    is what a CPU batched GEMM wants: a slice ``[:, :, :t]`` of a ``(rows, Hkv, T, hd)`` store has a batch stride
    that is not the matrix size and is copied by ``bmm`` every call, 3-4x the cost of the product itself.
    """

    num_layers: int
    max_suffix: int
    group: torch.Tensor  # (S,) int64
    prefix_bias: torch.Tensor  # (G, P) float32: 0 on prompt tokens, -inf on padding
    mode: str = "prefill"
    length: int = 0  # suffix positions already written
    block: int = 0  # suffix positions per block; 0 picks suffix_block_size(max_suffix)
    pool: dict | None = None  # flat buffers reused for the suffix stores across chunks of one generate call
    slot: torch.Tensor = field(init=False)
    num_slots: int = field(init=False)
    dense: bool = field(init=False)
    padded_prefix: bool = field(init=False)
    prefix_k: list[torch.Tensor | None] = field(init=False)  # per layer (G, Hkv, hd, P): keys transposed
    prefix_v: list[torch.Tensor | None] = field(init=False)
    suffix_k: list[torch.Tensor | None] = field(init=False)
    suffix_v: list[torch.Tensor | None] = field(init=False)

    def __post_init__(self) -> None:
        self.block = self.block or suffix_block_size(self.max_suffix)
        self.num_blocks = -(-self.max_suffix // self.block)
        self.prefix_k = [None] * self.num_layers
        self.prefix_v = [None] * self.num_layers
        self.suffix_k = [None] * self.num_layers
        self.suffix_v = [None] * self.num_layers
        self.padded_prefix = bool(torch.isinf(self.prefix_bias).any())
        self._assign_slots()

    def store(self, name: tuple, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised suffix store of ``shape``, from the pool when one is large enough."""
        size = math.prod(shape)
        pool = {} if self.pool is None else self.pool
        buf = pool.get(name)
        if buf is None or buf.numel() < size or buf.dtype != like.dtype or buf.device != like.device:
            buf = like.new_empty(size)
            pool[name] = buf
        return buf[:size].view(shape)

    def _assign_slots(self) -> None:
        """Slot = rank of a row among the rows of its group (rows are kept sorted by group)."""
        g = self.group
        counts = torch.bincount(g, minlength=self.prefix_bias.shape[0])  # (G,)
        starts = torch.cumsum(counts, 0) - counts
        self.slot = torch.arange(g.numel()) - starts[g]
        self.num_slots = int(counts.max()) if g.numel() else 0
        # Dense: every group has the same number of rows, so the padded layout is a plain view of the rows.
        self.dense = bool((counts == self.num_slots).all())

    def keep(self, rows: torch.Tensor) -> None:
        """Drop finished rows: keep ``rows`` (sorted (S',) int64 indices of the current rows).

        The kept rows move to the front of the existing suffix buffers, block by block (so the only temporary is
        one block); blocks not entered yet are skipped.
        """
        self.group = self.group[rows]
        entered = -(-self.length // self.block)  # blocks holding written positions
        for layer in range(self.num_layers):
            for store in (self.suffix_k, self.suffix_v):
                buf = store[layer]
                if buf is not None:
                    for b in range(entered):
                        buf[b, : rows.numel()] = buf[b, rows]  # the gather copies first, so no aliasing
        self._assign_slots()


def _check_supported(kwargs: dict) -> None:
    for key in ("sliding_window", "softcap"):
        if kwargs.get(key) is not None:
            raise NotImplementedError(f"shared-prefix attention does not support {key}={kwargs[key]!r}")


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    brorl_kv: SharedPrefixKV | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The ``AttentionInterface`` function. query (b, H, q, hd), key/value (b, Hkv, q, hd) -> (b, q, H, hd)."""
    if brorl_kv is None:
        raise RuntimeError("shared_prefix_attention needs the brorl_kv keyword (use the rollout engine)")
    _check_supported(kwargs)
    layer = module.layer_idx
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if brorl_kv.mode == "prefill":
        # Laid out once for the decode GEMMs: keys transposed to (G, Hkv, hd, P), values (G, Hkv, P, hd), both
        # contiguous. The model hands over (G, P, Hkv, hd) memory viewed as (G, Hkv, P, hd), whose batch dims do
        # not fold into one, so every decode GEMM against it would otherwise copy it (per layer, per step).
        brorl_kv.prefix_k[layer] = key.transpose(-1, -2).contiguous()
        brorl_kv.prefix_v[layer] = value.contiguous()
        # Right padding is harmless under a causal mask: real tokens never look at later (padding) positions.
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale, enable_gqa=True)
        return out.transpose(1, 2), None
    return _decode_attention(brorl_kv, layer, query, key, value, scale), None


def _decode_attention(
    kv: SharedPrefixKV, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float
) -> torch.Tensor:
    """One decode step: softmax over [prompt prefix ; own suffix] as two partial softmaxes merged exactly.

    The prefix part runs in the prompt-group layout (one GEMM per group and kv head), the suffix part per row and
    block; each yields its normalised output and log-normaliser, and the two are merged with weights
    exp(lse_part - lse_total). Only (S, H, hd) outputs and (S, H) normalisers change layout, never the (S, H, P)
    prefix scores.
    """
    s, h, _, hd = query.shape
    hkv = key.shape[1]
    rep = h // hkv
    t, width = kv.length, kv.block
    current, offset = divmod(t, width)
    if kv.suffix_k[layer] is None:
        shape = (kv.num_blocks, s, hkv, width, hd)
        kv.suffix_k[layer], kv.suffix_v[layer] = (
            kv.store((layer, "k"), shape, key),
            kv.store((layer, "v"), shape, value),
        )
    suf_k, suf_v = kv.suffix_k[layer][:, :s], kv.suffix_v[layer][:, :s]  # (blocks, S, Hkv, block, hd)
    if offset == 0:
        # Unwritten positions of the current block get probability 0; their values must be finite (0 * NaN).
        suf_v[current].zero_()
    suf_k[current, :, :, offset] = key[:, :, 0]
    suf_v[current, :, :, offset] = value[:, :, 0]
    q = (query * scale).reshape(s, hkv, rep, hd)  # head h uses kv head h // rep, as in repeat_kv

    # Prefix: the queries of a prompt group as rows of one matrix against the prompt's keys.
    pre_kt, pre_v = kv.prefix_k[layer], kv.prefix_v[layer]  # (G, Hkv, hd, P), (G, Hkv, P, hd)
    scores = _to_groups(kv, q) @ pre_kt  # (G, Hkv, slots*rep, P)
    if kv.padded_prefix:
        scores += kv.prefix_bias[:, None, None, :]
    pre_out, pre_lse = _partial_softmax_out(scores, lambda probs: probs @ pre_v)
    pre_out, pre_lse = _from_groups(kv, pre_out, rep), _from_groups(kv, pre_lse, rep)  # (S, Hkv, rep, .)

    # Suffix: each row against its own positions, block by block (contiguous batches of matrices).
    q_rows = q.reshape(s * hkv, rep, hd)
    blocks = [suf_k[b].view(s * hkv, width, hd) for b in range(current + 1)]
    suf_scores = torch.cat([q_rows @ k.transpose(1, 2) for k in blocks], dim=-1)  # (S*Hkv, rep, blocks*block)
    suf_scores[..., t + 1 :] = float("-inf")  # not yet written

    def suffix_values(probs: torch.Tensor) -> torch.Tensor:
        out = probs[..., :width] @ suf_v[0].view(s * hkv, width, hd)
        for b in range(1, current + 1):
            out.baddbmm_(probs[..., b * width : (b + 1) * width], suf_v[b].view(s * hkv, width, hd))
        return out

    suf_out, suf_lse = _partial_softmax_out(suf_scores, suffix_values)
    suf_out, suf_lse = suf_out.view(s, hkv, rep, hd), suf_lse.view(s, hkv, rep, 1)

    # Merge: softmax over both parts = each part's softmax weighted by its share of the total mass (float32).
    top = torch.maximum(pre_lse, suf_lse)
    w_pre, w_suf = (pre_lse - top).exp_(), (suf_lse - top).exp_()
    norm = w_pre + w_suf
    out = pre_out.float() * (w_pre / norm) + suf_out.float() * (w_suf / norm)
    return out.to(query.dtype).reshape(s, 1, h, hd)


def _partial_softmax_out(scores: torch.Tensor, values) -> tuple[torch.Tensor, torch.Tensor]:
    """``values(softmax(scores))`` and float32 ``logsumexp(scores)`` (last dim kept as 1), from one softmax pass.

    The largest probability is exp(0) / Z, so logsumexp = max - log(largest probability) to within an ulp. The
    softmax and normaliser are float32 whatever the model dtype (a bf16 normaliser would be off by ~0.4%); the
    probabilities go back to the model dtype for the product with the values, as a single bf16 softmax would.
    """
    x = scores.float()
    probs = torch.softmax(x, dim=-1)
    lse = x.amax(dim=-1, keepdim=True) - probs.amax(dim=-1, keepdim=True).log_()
    return values(probs.to(scores.dtype)), lse


def _to_groups(kv: SharedPrefixKV, x: torch.Tensor) -> torch.Tensor:
    """(S, Hkv, rep, D) rows -> (G, Hkv, slots*rep, D) padded group layout (zeros in empty slots)."""
    _, hkv, rep, d = x.shape
    g = kv.prefix_bias.shape[0]
    if kv.dense:
        grid = x.view(g, kv.num_slots, hkv, rep, d)
    else:
        grid = x.new_zeros((g, kv.num_slots, hkv, rep, d))
        grid[kv.group, kv.slot] = x
    return grid.permute(0, 2, 1, 3, 4).reshape(g, hkv, kv.num_slots * rep, d)


def _from_groups(kv: SharedPrefixKV, y: torch.Tensor, rep: int) -> torch.Tensor:
    """(G, Hkv, slots*rep, D) -> (S, Hkv, rep, D), the inverse of :func:`_to_groups` on occupied slots."""
    g, hkv, _, d = y.shape
    grid = y.view(g, hkv, kv.num_slots, rep, d).permute(0, 2, 1, 3, 4)  # (G, slots, Hkv, rep, D)
    if kv.dense:
        return grid.reshape(g * kv.num_slots, hkv, rep, d)
    return grid[kv.group, kv.slot]


def register() -> None:
    """Register :func:`shared_prefix_attention` with transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, shared_prefix_attention)
