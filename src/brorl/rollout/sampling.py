"""Token sampling as pure tensor functions: logits processing, counter-based uniforms, inverse-CDF draws.

Reproducibility scheme: every draw uses one uniform u = hash(seed, prompt key, sample index, position), never a
stateful generator, so a sequence's samples do not depend on which other sequences share its batch, on the chunk
size, or (with global prompt keys) on the number of ranks. The token is the inverse CDF of the processed
distribution at u, located in two levels (block sums, then one block) in float64; see :func:`inverse_cdf` for the
precision argument.

Cost notes (CPU, one thread, 512 × 2,048 float32, measured on the project's 2-core VM): a softmax is ~0.6 ms and
a float32 elementwise op or row reduction ~0.05-0.1 ms, but boolean-mask kernels (``masked_fill``, ``torch.where``,
multiplying by a bool tensor) take 2-5 ms, a full ``cumsum`` ~1 ms, and a fresh 4 MB tensor can cost ~3 ms in
page faults when the allocator hands the memory back to the OS between steps. So the hot path masks with float
arithmetic, never builds a full-vocabulary CDF, and writes its (S, V) intermediates into a reusable
:class:`SamplingWorkspace`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for int64 x in [0, 2**32), split in 16-bit halves so no int64 product overflows."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser: a bijection on [0, 2**32) with full avalanche."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def counter_uniforms(
    seed: int, prompt_keys: torch.Tensor, sample_index: torch.Tensor, position: torch.Tensor | int
) -> torch.Tensor:
    """Uniforms in the open interval (0, 1), a pure function of (seed, prompt key, sample, position).

    Args:
        seed: non-negative integer.
        prompt_keys: (S,) int64 global prompt ids.
        sample_index: (S,) int64 index of each sequence within its prompt's group.
        position: response position (int or (S,) int64).

    Returns:
        (S,) float64.
    """
    h = _fmix32(torch.full_like(prompt_keys, seed & _MASK32) ^ 0x3C6EF372)
    position = torch.as_tensor(position, dtype=torch.int64).expand_as(prompt_keys)
    # Each field is hashed with its own offset before being mixed in, so (a, b) and (b, a) differ.
    for value, offset in ((prompt_keys, 0x9E3779B9), (sample_index, 0x7F4A7C15), (position, 0x165667B1)):
        h = _fmix32(h ^ _fmix32((value + offset) & _MASK32))
    return (h.double() + 0.5) / 2.0**32


class SamplingWorkspace:
    """Reusable buffers for :func:`sample_tokens`, so a decode loop does not allocate (S, V) tensors every step.

    Buffers are allocated on first use and grown when a larger one is asked for; a smaller request gets a view
    of the front. Keep one workspace per decode loop (not shared between threads); drop it to free the memory.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor, dtype=None) -> torch.Tensor:
        dtype = like.dtype if dtype is None else dtype
        size = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < size or buf.dtype != dtype or buf.device != like.device:
            buf = torch.empty(size, dtype=dtype, device=like.device)
            self._buffers[name] = buf
        return buf[:size].view(shape)


class _NoWorkspace(SamplingWorkspace):
    """Fresh tensors every call (the pure-function behaviour when no workspace is passed)."""

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor, dtype=None) -> torch.Tensor:
        return torch.empty(shape, dtype=like.dtype if dtype is None else dtype, device=like.device)


def _keep_mask(
    values: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Float 1.0 where ``values >= threshold`` else 0.0, written into ``out`` if given.

    Exact (the sign of a float difference is exact); float arithmetic because boolean-mask kernels are several
    times slower on CPU.
    """
    return torch.sub(values, threshold, out=out).sign_().add_(1.0).clamp_(max=1.0)


def _mask_below(x: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Entries of ``x`` below the per-row ``threshold`` become -inf, the others stay bit-exact.

    The result goes to ``out`` (which must not be ``x``) if given.
    """
    if not bool(torch.isfinite(threshold).all()):  # -inf - (-inf) is NaN: use the plain (slower) mask
        return x.masked_fill(x < threshold, float("-inf"))
    return _keep_mask(x, threshold, out=out).log_().add_(x)  # log(1) = 0 keeps x; log(0) = -inf removes it


def process_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Apply temperature, then top-k, then top-p; removed tokens get -inf.

    Args:
        logits: (S, V) float.
        temperature: > 0 (greedy is handled by the caller).
        top_k: keep the k largest (ties at the k-th value kept); 0 disables.
        top_p: keep the most likely tokens until the mass before the next one reaches top_p; 1 disables.

    Returns:
        (S, V) float32 processed logits (unnormalised).
    """
    ws = _NoWorkspace()
    x = logits.float() if temperature == 1.0 else logits.float() / temperature
    if 0 < top_k < x.shape[-1]:
        x = _mask_below(x, _kth_largest(x, top_k, ws))
    if top_p < 1.0:
        probs = torch.softmax(x, dim=-1)  # (S, V)
        x = _keep_mask(probs, _top_p_threshold(probs, top_p, ws)).log_().add_(x)
    return x


def _top_p_threshold(probs: torch.Tensor, top_p: float, ws: SamplingWorkspace) -> torch.Tensor:
    """(S, 1) smallest kept probability of nucleus sampling: token i is kept iff ``probs[i] >= threshold``.

    Token i is kept iff the mass of tokens strictly more likely than i is below top_p (ties at the threshold kept).
    This needs only the smallest kept probability, found from the sorted values (no argsort). Uses the workspace
    buffers ``"sorted"`` and ``"cumsum"``.
    """
    desc = _sort_descending(probs, ws.get("sorted", probs.shape, probs))
    mass_before = torch.cumsum(desc, dim=-1, out=ws.get("cumsum", probs.shape, probs)).sub_(desc)
    # Count mass_before < top_p as sign(top_p - mass_before) clamped at 0 (1.0 iff strictly below; top_p is
    # rounded to float32 as in a float32 comparison): summing a bool mask would allocate an int64 copy.
    below = mass_before.neg_().add_(top_p).sign_().clamp_(min=0.0)
    kept = below.sum(dim=-1, keepdim=True).long()  # (S, 1), >= 1 since mass_before[0] = 0
    return desc.gather(1, kept - 1)


def _kth_largest(x: torch.Tensor, k: int, ws: SamplingWorkspace) -> torch.Tensor:
    """(S, 1) k-th largest value per row; numpy's partition on CPU is ~10x faster than torch.topk there."""
    if x.device.type == "cpu":
        v = x.shape[-1]
        part = ws.get("sorted", x.shape, x).copy_(x)
        part.numpy().partition(v - k, axis=-1)  # in place
        return part[:, v - k : v - k + 1].clone()
    return torch.topk(x, k, dim=-1).values[:, -1:]


def _sort_descending(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``x`` sorted descending per row, into ``out``; numpy's SIMD sort on CPU is ~6x faster than torch.sort.

    Sorting the negated values ascending in place avoids a reversed copy.
    """
    if x.device.type == "cpu":
        buf = out.numpy()
        np.negative(x.numpy(), out=buf)
        buf.sort(axis=-1)
        np.negative(buf, out=buf)
        return out
    return out.copy_(torch.sort(x, dim=-1, descending=True).values)


def _softmax_lse(x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(x)`` (S, V), written into ``out``, and ``logsumexp(x)`` (S, 1), from one softmax pass.

    The largest probability is exp(0) / Z = 1 / Z to within an ulp, so logsumexp = max - log(max probability);
    it is never tiny (>= 1 / V), so this is as accurate as ``log_softmax`` (~1e-7) while costing two cheap row
    maxima instead of a second full-vocabulary pass.
    """
    probs = torch._softmax(x, -1, False, out=out)
    lse = x.amax(dim=-1, keepdim=True) - probs.amax(dim=-1, keepdim=True).log_()
    return probs, lse


def _cdf_block(v: int) -> int:
    """Block width of the two-level inverse CDF: a power of two near sqrt(V), at least 16."""
    return max(16, 1 << round(math.log2(max(v, 1)) / 2))


def inverse_cdf(
    weights: torch.Tensor, uniforms: torch.Tensor, workspace: SamplingWorkspace | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw token i with probability ``weights[i] / sum(weights)`` by inverse CDF at ``uniforms``.

    Returns the first i whose cumulative weight C_i = w_0 + ... + w_i reaches u * C_{V-1}, exactly as a float64
    cumulative sum over the whole vocabulary would, without building one (a full ``cumsum`` is ~1 ms per
    512 × 2,048 on CPU, and its float64 copy is 8 MB per step):

    1. block sums: the weights, in blocks of ~sqrt(V) tokens, summed in float64 (one vectorised pass);
    2. the block whose cumulative sum first reaches the target u * total (float64 cumsum over ~sqrt(V) values);
    3. the token inside that block, by a float64 cumsum of its ~sqrt(V) weights against the remaining target.

    Precision. Every cumulative sum is float64 over float32 weights (each exactly representable), so a boundary
    C_i is off by at most ~V * 2**-53 * total ≈ 1e-11 of the total even for V = 150k: a token changes only if u
    falls that close to a boundary, the same guarantee as the previous full float64 CDF. A float32 CDF would not
    be exact enough: each float32 partial sum is rounded to 2**-24 of its value, so every boundary moves by up to
    ~6e-8 of the total, which reweights any token with probability below ~1e-7 by O(1) of itself (with V = 150k
    most of the vocabulary is such a tail) and shifts up to ~V * 3e-8 of the mass overall (≈0.5% at V = 150k,
    ≈6e-5 at V = 2,048). If rounding makes the remaining target exceed the chosen block's float64 sum (a 1e-16
    event), the block's last positive-weight token is taken, so a zero-weight token is never drawn.

    Args:
        weights: (S, V) float32, non-negative, each row with a positive sum.
        uniforms: (S,) float64 in (0, 1).
        workspace: reusable buffers (the float64 copy of the weights).

    Returns:
        tokens (S,) int64; totals (S,) float64, the row sums of ``weights``.
    """
    s, v = weights.shape
    width = _cdf_block(v)
    full = v // width
    ws = _NoWorkspace() if workspace is None else workspace
    # Exact float64 copy of the float32 weights (a float64 ``sum(dtype=...)`` would allocate this copy anyway).
    wide = ws.get("float64", weights.shape, weights, torch.float64).copy_(weights)
    parts = []
    if full:
        parts.append(wide[:, : full * width].reshape(s, full, width).sum(-1))
    if v % width:
        parts.append(wide[:, full * width :].sum(-1, keepdim=True))
    block_cdf = torch.cat(parts, dim=1).cumsum_(dim=1) if len(parts) > 1 else parts[0].cumsum_(dim=1)
    total = block_cdf[:, -1:]  # (S, 1)
    target = uniforms.to(torch.float64)[:, None] * total  # strictly inside (0, total)
    block = torch.searchsorted(block_cdf, target).clamp_(max=block_cdf.shape[1] - 1)  # (S, 1)
    before = block_cdf.gather(1, (block - 1).clamp_(min=0)) * (block > 0)
    cols = block * width + torch.arange(width, device=weights.device)  # (S, width)
    inside = wide.gather(1, cols.clamp(max=v - 1)) * (cols < v)  # (S, width)
    offset = torch.searchsorted(inside.cumsum(dim=1), target - before)  # (S, 1)
    if bool((offset >= width).any()):  # rounding guard: take the block's last positive-weight token
        last = (torch.arange(1, width + 1, device=weights.device) * (inside > 0)).argmax(dim=1, keepdim=True)
        offset = torch.where(offset >= width, last, offset)
    return (block * width + offset)[:, 0], total[:, 0]


def sample_tokens(
    logits: torch.Tensor,
    uniforms: torch.Tensor,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
    workspace: SamplingWorkspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw one token per row and report its log-probabilities.

    Computes the same as: ``logp = log_softmax(process_logits(logits, ...))``, token = inverse CDF of
    ``exp(logp)`` at u, but in fewer full-vocabulary passes: one softmax gives the probabilities and the
    log-normaliser; truncation zeroes weights instead of re-normalising (the inverse CDF divides by the total
    itself), so the kept mass enters the log-prob as ``- log(kept mass)``; with no truncation (top_k = 0,
    top_p = 1) nothing is masked or renormalised at all; and at temperature 1 without top-k the raw log-prob
    reuses the same normaliser instead of a second log-softmax.

    Args:
        logits: (S, V) raw model logits.
        uniforms: (S,) float64 in (0, 1), from :func:`counter_uniforms` (ignored when greedy).
        workspace: reusable buffers (:class:`SamplingWorkspace`); by default fresh tensors are allocated.

    Returns:
        tokens (S,) int64; logprobs (S,) float32 under the sampling distribution (0 when greedy);
        raw_logprobs (S,) float32 under ``log_softmax(logits)``.
    """
    ws = _NoWorkspace() if workspace is None else workspace
    logits = logits.float()
    shape = logits.shape
    if temperature == 0:
        tokens = torch.argmax(logits, dim=-1)
        raw = torch._log_softmax(logits, -1, False, out=ws.get("probs", shape, logits))
        return tokens, torch.zeros(tokens.shape, dtype=torch.float32), raw.gather(1, tokens[:, None])[:, 0]
    x = logits if temperature == 1.0 else torch.div(logits, temperature, out=ws.get("scaled", shape, logits))
    top_k_active = 0 < top_k < shape[-1]
    if top_k_active:
        x = _mask_below(x, _kth_largest(x, top_k, ws), out=ws.get("top_k", shape, logits))
    probs, lse = _softmax_lse(x, ws.get("probs", shape, logits))  # (S, V), (S, 1)
    if top_p < 1.0:
        threshold = _top_p_threshold(probs, top_p, ws)
        weights = _keep_mask(probs, threshold, out=ws.get("sorted", shape, logits)).mul_(probs)
    else:
        weights = probs  # no truncation: sample the softmax itself
    tokens, total = inverse_cdf(weights, uniforms, ws)
    index = tokens[:, None]
    untruncated = (x.gather(1, index) - lse)[:, 0]  # log_softmax(x) at the token
    logp = untruncated - total.log().float() if top_p < 1.0 else untruncated
    if temperature == 1.0 and not top_k_active:
        raw = untruncated
    else:
        raw_all = torch._log_softmax(logits, -1, False, out=ws.get("cumsum", shape, logits))
        raw = raw_all.gather(1, index)[:, 0]
    return tokens, logp, raw
