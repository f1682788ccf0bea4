"""Shared-prefix attention: a prompt's keys/values are stored once and read by all of its N rollouts.

How it works. The engine swaps the model's attention implementation (through transformers' ``AttentionInterface``,
so any model whose attention layers dispatch through it works: Llama, Qwen2/3, Mistral, ...) for
:func:`shared_prefix_attention` and runs the model with ``use_cache=False``, passing a :class:`SharedPrefixKV` as an
extra keyword argument that transformers forwards to every attention call. Then:

- prefill: the G prompts of a chunk (right-padded to P) go through causal attention once; their keys/values
  become the per-layer prefix store, shape (G, Hkv, P, hd).
- decode: each live sequence's new key/value is written in place into a preallocated per-sequence suffix store
  (S, Hkv, T, hd). Its query attends to the prefix of its own prompt and to its own suffix, with one softmax over
  both parts. The prefix part is one batched matmul per prompt group: the group's queries are laid out as rows
  (G, Hkv, slots*rep, hd) against (G, Hkv, hd, P), so the prompt keys are read once per group instead of once per
  rollout, and the matmul is a real GEMM rather than N matrix-vector products.

No causal mask is needed at decode (one new token per sequence), only a -inf bias on prompt padding. Sliding-window
and logit-softcapping models are rejected here; the engine falls back to expanding a standard cache for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

ATTN_NAME = "brorl_shared_prefix"


@dataclass
class SharedPrefixKV:
    """Keys/values of one chunk: prompts once (prefix), responses per sequence (suffix).

    Row bookkeeping: ``group[i]`` is the prompt (0..G-1) of active row i and ``slot[i]`` its place among the
    active rows of that prompt, so ``(group, slot)`` addresses the padded (G, slots) layout used for the prefix.
    """

    num_layers: int
    max_suffix: int
    group: torch.Tensor  # (S,) int64
    prefix_bias: torch.Tensor  # (G, P) float32: 0 on prompt tokens, -inf on padding
    mode: str = "prefill"
    length: int = 0  # suffix positions already written
    slot: torch.Tensor = field(init=False)
    num_slots: int = field(init=False)
    dense: bool = field(init=False)
    prefix_k: list[torch.Tensor | None] = field(init=False)
    prefix_v: list[torch.Tensor | None] = field(init=False)
    suffix_k: list[torch.Tensor | None] = field(init=False)
    suffix_v: list[torch.Tensor | None] = field(init=False)

    def __post_init__(self) -> None:
        self.prefix_k = [None] * self.num_layers
        self.prefix_v = [None] * self.num_layers
        self.suffix_k = [None] * self.num_layers
        self.suffix_v = [None] * self.num_layers
        self._assign_slots()

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
        """Drop finished rows: keep ``rows`` (sorted (S',) int64 indices of the current rows)."""
        self.group = self.group[rows]
        n = self.length
        for layer in range(self.num_layers):
            for store in (self.suffix_k, self.suffix_v):
                buf = store[layer]
                if buf is not None:
                    new = buf.new_empty((rows.numel(), *buf.shape[1:]))
                    new[:, :, :n] = buf[rows, :, :n]  # copy only the written positions
                    store[layer] = new
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
        brorl_kv.prefix_k[layer], brorl_kv.prefix_v[layer] = key, value
        # Right padding is harmless under a causal mask: real tokens never look at later (padding) positions.
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale, enable_gqa=True)
        return out.transpose(1, 2), None
    return _decode_attention(brorl_kv, layer, query, key, value, scale), None


def _decode_attention(
    kv: SharedPrefixKV, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float
) -> torch.Tensor:
    s, h, _, hd = query.shape
    hkv = key.shape[1]
    rep = h // hkv
    t = kv.length
    if kv.suffix_k[layer] is None:
        kv.suffix_k[layer] = key.new_empty((s, hkv, kv.max_suffix, hd))
        kv.suffix_v[layer] = value.new_empty((s, hkv, kv.max_suffix, hd))
    suf_k, suf_v = kv.suffix_k[layer], kv.suffix_v[layer]
    suf_k[:, :, t] = key[:, :, 0]
    suf_v[:, :, t] = value[:, :, 0]
    q = query.reshape(s, hkv, rep, hd) * scale  # head h uses kv head h // rep, as in repeat_kv
    pre_k, pre_v = kv.prefix_k[layer], kv.prefix_v[layer]  # (G, Hkv, P, hd)
    p = pre_k.shape[2]

    q_pad = _to_groups(kv, q)  # (G, Hkv, slots*rep, hd)
    pre_scores = _from_groups(kv, q_pad @ pre_k.transpose(-1, -2), rep)  # (S, Hkv, rep, P)
    pre_scores = pre_scores + kv.prefix_bias[kv.group][:, None, None, :]
    suf_scores = q @ suf_k[:, :, : t + 1].transpose(-1, -2)  # (S, Hkv, rep, t+1)
    probs = torch.softmax(torch.cat([pre_scores, suf_scores], dim=-1), dim=-1)
    pre_probs, suf_probs = probs[..., :p], probs[..., p:]
    out = _from_groups(kv, _to_groups(kv, pre_probs) @ pre_v, rep)  # (S, Hkv, rep, hd)
    out = out + suf_probs @ suf_v[:, :, : t + 1]
    return out.reshape(s, 1, h, hd)


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
