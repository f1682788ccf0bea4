"""Log-probabilities of a group's responses with the prompt computed once (BRORL.md §7, point 2).

A group is one prompt and R of its responses. ``group_logprobs`` forwards the prompt once with ``use_cache=True``;
its keys/values and last-position logits then serve every micro-batch of responses. With a gradient, the prompt's
cache tensors are detached into leaves; each micro-batch's backward accumulates into their ``.grad``, and one final
backward carries the sum through the prompt's forward. So the prompt costs one forward and one backward per group,
not one per response, and peak memory is bounded by the micro-batch, not by N.

How a micro-batch reads the prompt. For models whose attention layers dispatch through transformers'
``AttentionInterface`` (Llama, Qwen2/3, Mistral, ...), the response pass swaps in :func:`prefix_attention`: each
layer's response keys/values are joined to the prompt's and one ``scaled_dot_product_attention`` call runs with
grouped-query heads (``enable_gqa``) and one (t, P + t) mask shared by all rows (prompt visible, responses causal).
Through the model's own cache path instead, transformers builds a per-row mask and then, because a mask is
present, copies every key/value head ``H / Hkv`` times (``repeat_kv``) and sums them back in the backward; that
cost 5% of the pass in a profile. Models with sliding windows or logit soft-capping use the cache path
(``DynamicCache``), which is exact for every model.

``plain_logprobs`` is the reference: prompt and response concatenated and forwarded per row (what frameworks that
duplicate the prompt N times do). Tests check the two agree.

Shapes: P = prompt tokens, R = responses in the group, T = response tokens, V = vocabulary.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

__all__ = ["LossFn", "PrefixKV", "group_logprobs", "pack_rows", "plain_logprobs", "prefix_attention", "token_logprobs"]

# loss_fn(rows, logp (r, T) with grad, entropy (r, T) or None) -> scalar loss of those rows; ``rows`` indexes the
# group's rows (an index tensor: rows are packed by length, not in order)
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / temperature)[tokens]. logits (..., V), tokens (...) → (...) float32."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = logits.float() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _cache_kwarg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"  # transformers 5 renamed the argument


def _prompt_pass(model, prompt: torch.Tensor):
    """Forward the prompt once. Returns ([(k, v)] per layer, last-position logits (1, V))."""
    out = model(input_ids=prompt[None], use_cache=True)
    cache = out.cache if "cache" in out else out.past_key_values  # transformers 5 renamed the field
    kv = [(layer.keys, layer.values) for layer in cache.layers] if hasattr(cache, "layers") else list(cache)
    return kv, out.logits[:, -1]


PREFIX_ATTN = "brorl_training_prefix"


class PrefixKV:
    """The prompt's keys/values per layer, (1, Hkv, P, hd) each, read by every response row of a micro-batch."""

    def __init__(self, kv: list[tuple[torch.Tensor, torch.Tensor]]):
        self.kv = kv
        self.mask: torch.Tensor | None = None  # (t, P + t) bool, built once per micro-batch

    def allowed(self, t: int, device: torch.device) -> torch.Tensor:
        p = self.kv[0][0].shape[2]
        if self.mask is None or self.mask.shape != (t, p + t):
            i = torch.arange(t, device=device)[:, None]
            j = torch.arange(p + t, device=device)[None, :]
            self.mask = (j < p) | (j - p <= i)  # the whole prompt, then the response causally
        return self.mask


def prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    brorl_prefix: PrefixKV | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``AttentionInterface`` function of the response pass. query (r, H, t, hd), key/value (r, Hkv, t, hd) of
    the responses; the prompt's come from ``brorl_prefix``. Returns (r, t, H, hd).

    Responses are right-padded, so the causal mask alone keeps valid tokens off padding (the model's own
    ``attention_mask`` is not needed); padded positions produce values that the loss never reads.
    """
    if brorl_prefix is None:
        raise RuntimeError("prefix_attention needs the brorl_prefix keyword (use group_logprobs)")
    r, _, t, _ = query.shape
    pk, pv = brorl_prefix.kv[module.layer_idx]
    k = torch.cat([pk.expand(r, -1, -1, -1), key], dim=2)
    v = torch.cat([pv.expand(r, -1, -1, -1), value], dim=2)
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        k,
        v,
        attn_mask=brorl_prefix.allowed(t, query.device),
        dropout_p=dropout if module.training else 0.0,
        scale=scaling,
        enable_gqa=True,
    )
    return out.transpose(1, 2), None


def _prefix_attention_ok(model) -> bool:
    """Whether the response pass can use :func:`prefix_attention` (else the model's cache path)."""
    config = model.config
    if getattr(config, "sliding_window", None) is not None or getattr(config, "use_sliding_window", False):
        return False
    if any(getattr(config, k, None) for k in ("attn_logit_softcapping", "final_logit_softcapping")):
        return False
    layers = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "config")]
    if not layers:
        return False
    try:
        from transformers import AttentionInterface
    except ImportError:
        return False
    AttentionInterface.register(PREFIX_ATTN, prefix_attention)
    return True


def _pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad (r, t) with zeros to (r, width), keeping the graph: loss functions index the group's full width."""
    return x if x.shape[1] == width else torch.nn.functional.pad(x, (0, width - x.shape[1]))


def _response_pass(model, kv, last_logits, prompt_len, ids, mask, temperature, want_entropy):
    """Log-probs (r, T) of r responses given the prompt cache, and entropies (r, T) or None.

    Token 0 is predicted by the prompt's last position, token j > 0 by response position j − 1, so only the first
    T − 1 response tokens are fed; the two parts are scored separately, never copying the (r, T, V) logits.
    """
    from transformers import DynamicCache

    r, t = ids.shape
    # token 0 of every row is scored by the one prompt distribution: one log-softmax over V, then a gather (a
    # log-softmax of the (r, V) expansion costs r times that, forward and backward)
    first = torch.log_softmax(last_logits.float() / temperature, dim=-1)  # (1, V)
    logp = first[0, ids[:, 0]][:, None]  # (r, 1)
    ent = _entropy(last_logits, temperature).expand(r)[:, None] if want_entropy else None
    if t == 1:
        return logp, ent
    pos = torch.arange(prompt_len, prompt_len + t - 1, device=ids.device)[None].expand(r, t - 1)
    if isinstance(kv, PrefixKV):
        config = model.config
        previous = config._attn_implementation
        config._attn_implementation = PREFIX_ATTN
        try:
            out = model(input_ids=ids[:, :-1], position_ids=pos, use_cache=False, brorl_prefix=kv)
        finally:
            config._attn_implementation = previous
    else:
        cache = DynamicCache(ddp_cache_data=[(k.expand(r, -1, -1, -1), v.expand(r, -1, -1, -1)) for k, v in kv])
        attn = torch.cat([mask.new_ones((r, prompt_len)), mask[:, :-1]], dim=1).long()
        out = model(
            input_ids=ids[:, :-1],
            attention_mask=attn,
            position_ids=pos,
            use_cache=True,
            **{_cache_kwarg(model): cache},
        )
    logp = torch.cat([logp, token_logprobs(out.logits, ids[:, 1:], temperature)], dim=1)  # (r, T)
    if want_entropy:
        ent = torch.cat([ent, _entropy(out.logits, temperature)], dim=1)
    return logp, ent


def pack_rows(lengths: torch.Tensor, rows_per_micro: int) -> list[torch.Tensor]:
    """Micro-batches of row indices, rows sorted by length, each within a token budget of
    ``rows_per_micro`` × (the longest length): long and short responses do not share padding.

    lengths: (R,) valid tokens per row. Returns index tensors covering every row once.
    """
    order = torch.argsort(lengths, stable=True)
    budget = rows_per_micro * max(int(lengths.max()), 1) if len(lengths) else 0
    batches, start = [], 0
    while start < len(order):
        end = start + 1
        # rows are sorted, so the last row of a batch is its longest: grow while rows × that length fits
        while end < len(order) and (end + 1 - start) * max(int(lengths[order[end]]), 1) <= budget:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def group_logprobs(
    model,
    prompt: torch.Tensor,
    responses: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    rows_per_micro: int = 64,
    want_entropy: bool = False,
    loss_fn: LossFn | None = None,
    attention: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs of R responses to one prompt, the prompt forwarded once.

    Args:
        model: a Hugging Face causal LM.
        prompt: (P,) prompt token ids.
        responses: (R, T) response ids, right-padded.
        mask: (R, T) bool, valid response tokens.
        temperature: logits are divided by it (the sampling temperature, so log-probs match the engine's).
        rows_per_micro: responses per forward (the memory bound): micro-batches hold rows of similar length, at
            most rows_per_micro × (the longest response) tokens each, trimmed to their own longest row.
        want_entropy: also return per-token entropies.
        loss_fn: with a gradient: called per micro-batch as ``loss_fn(rows, logp, entropy)``; its scalar is
            back-propagated (into the model's ``.grad``), then the prompt's share once at the end. Without it the
            pass runs under ``torch.no_grad``.
        attention: how response rows read the prompt's keys/values: ``"prefix"`` (:func:`prefix_attention`),
            ``"cache"`` (the model's own cache path) or ``"auto"`` (prefix where the model supports it).

    Returns:
        logp (R, T) float32 detached (0 on padding), entropy (R, T) or None.
    """
    if responses.ndim != 2 or responses.shape != mask.shape:
        raise ValueError(
            f"responses and mask must both be (R, T), got {tuple(responses.shape)}, {tuple(mask.shape)}"
        )
    if rows_per_micro < 1:
        raise ValueError(f"rows_per_micro must be >= 1, got {rows_per_micro}")
    if attention not in ("auto", "prefix", "cache"):
        raise ValueError(f"attention must be 'auto', 'prefix' or 'cache', got {attention!r}")
    use_prefix = attention != "cache" and _prefix_attention_ok(model)
    if attention == "prefix" and not use_prefix:
        raise ValueError(
            f"{type(model).__name__} cannot use prefix attention (sliding window, soft-capping or no "
            "AttentionInterface layers); use attention='cache'"
        )
    wrap = PrefixKV if use_prefix else (lambda kv: kv)
    device = next(model.parameters()).device
    prompt, responses, mask = prompt.to(device), responses.to(device), mask.to(device)
    lengths = mask.sum(1).cpu()
    batches = pack_rows(lengths, rows_per_micro)
    width = responses.shape[1]
    out_lp = torch.zeros(responses.shape, dtype=torch.float32, device=device)
    out_ent = torch.zeros(responses.shape, dtype=torch.float32, device=device) if want_entropy else None
    if loss_fn is None:
        with torch.no_grad():
            kv, last = _prompt_pass(model, prompt)
            kv = wrap(kv)
            for rows in batches:
                t = max(int(lengths[rows].max()), 1)  # trim each micro-batch to its own longest row
                ids, m = responses[rows, :t], mask[rows, :t]
                lp, ent = _response_pass(model, kv, last, len(prompt), ids, m, temperature, want_entropy)
                out_lp[rows, :t] = lp.masked_fill(~m, 0.0)
                if out_ent is not None:
                    out_ent[rows, :t] = ent.masked_fill(~m, 0.0)
        return out_lp, out_ent
    kv, last = _prompt_pass(model, prompt)
    roots = [t for pair in kv for t in pair] + [last]
    leaves = [t.detach().requires_grad_(True) for t in roots]
    kv_leaves = wrap([(leaves[2 * i], leaves[2 * i + 1]) for i in range(len(kv))])
    for rows in batches:
        t = max(int(lengths[rows].max()), 1)
        ids, m = responses[rows, :t], mask[rows, :t]
        lp, ent = _response_pass(model, kv_leaves, leaves[-1], len(prompt), ids, m, temperature, want_entropy)
        loss_fn(rows, _pad_to(lp, width), None if ent is None else _pad_to(ent, width)).backward()
        out_lp[rows, :t] = lp.detach().masked_fill(~m, 0.0)
        if out_ent is not None:
            out_ent[rows, :t] = ent.detach().masked_fill(~m, 0.0)
    grads = [leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for leaf in leaves]
    torch.autograd.backward(roots, grads)  # the prompt's forward, once, with the summed gradient
    return out_lp, out_ent


def plain_logprobs(
    model,
    prompt: torch.Tensor,
    responses: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    rows_per_micro: int = 64,
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """Reference: each row forwards prompt + response in full. Same contract as :func:`group_logprobs`."""
    device = next(model.parameters()).device
    prompt, responses, mask = prompt.to(device), responses.to(device), mask.to(device)
    p = len(prompt)
    out = torch.zeros(responses.shape, dtype=torch.float32, device=device)
    for start in range(0, responses.shape[0], rows_per_micro):
        rows = slice(start, min(start + rows_per_micro, responses.shape[0]))
        ids = torch.cat([prompt[None].expand(responses[rows].shape[0], -1), responses[rows]], dim=1)
        attn = torch.cat([mask[rows].new_ones((ids.shape[0], p)), mask[rows]], dim=1).long()
        with torch.set_grad_enabled(loss_fn is not None):
            t = responses.shape[1]
            # logits only where they are scored (response positions), as TRL does: the fair baseline
            logits = model(input_ids=ids, attention_mask=attn, logits_to_keep=t + 1).logits[:, :-1]
            lp = token_logprobs(logits, responses[rows], temperature)
            if loss_fn is not None:
                loss_fn(rows, lp, None).backward()
        out[rows] = lp.detach().masked_fill(~mask[rows], 0.0)
    return out
