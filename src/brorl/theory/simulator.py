"""The token-level simulator of BroRL §4.1 (Figure 3), vectorised over every (N, seed) run at once.

One categorical "policy" over V tokens, a set P of correct tokens. Each step draws N i.i.d. tokens per run and
updates the logits. Two modes:

- ``paper`` (default, BRORL.md §3): rewards +1 / -1, centred by the batch mean; the linear surrogate
  L = -(1/N) Σ_j r̃_j p_{y_j} where duplicates count separately; AdamW (PyTorch defaults) at lr 1e-3.
- ``theorem``: Theorem 1's exact assumptions: set semantics (each distinct sampled token once, uncentred rewards
  R_c / R_w, unsampled tokens 0) and one plain gradient step Δz = (η/N) p (R - S_R). Each step's measured ΔQ_pos
  is recorded beside the first-order prediction of Theorem 1.

Speed: all R = len(rollouts) × len(seeds) runs live in one (R, V) tensor, so each step is a few dense passes over
R·V numbers (softmax, the gradient's dense part, the fused AdamW) plus work proportional to the draws. The gradient
of the surrogate is written in closed form, grad_k = p_k (S - c_k) / N with c_k the summed (centred) reward of
token k and S = Σ c p, so no autograd graph is built; it is p_k S / N on the undrawn tokens (one dense pass) and is
overwritten on the drawn ones. Draws are an inverse CDF of sorted uniforms (exponential spacings, no sort): with many
draws (N = 51,200) searched in ``torch.cumsum(p)`` by numpy's ``interp``, whose search starts from the previous
answer; with few draws by block then token, without a full CDF (``_Sampler``). The draws are reduced once to the
distinct tokens, their counts and per-(run, class) sums, from which both the gradient and Theorem 1's terms follow.

Randomness: run (N, seed) owns a ``numpy.random.Generator`` seeded with seed · 1,000,003 + N, and every operation on
its draws is row-wise, so a run's result does not depend on which other runs share the batch.

    brorl simulate                       # the paper's sweep, ~11 s on 2 idle cores
    brorl simulate --mode theorem --rollouts 4 64 1024 --seeds 0
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["STATE_METRICS", "STEP_METRICS", "SimulationResult", "initial_logits", "simulate"]

# metrics of the policy after each step (step 0 = the start)
STATE_METRICS = ("q_pos", "improved_frac", "worst_drop")
# metrics of the batch drawn at each step, at the policy before the update (NaN at step 0)
STEP_METRICS = ("s_r", "sampled_correct_term", "sampled_wrong_term", "unsampled_term")
THEOREM_METRICS = ("predicted_delta", "measured_delta")


@dataclass
class SimulationResult:
    """Per-run trajectories. ``runs[r] = (N, seed)``; every metric array is (R, steps + 1)."""

    runs: list[tuple[int, int]]
    steps: int
    mode: str
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0

    def rows(self):
        """Yield one dict per (n, seed, step), in the column order of ``metrics.csv``."""
        names = list(self.metrics)
        for r, (n, seed) in enumerate(self.runs):
            for t in range(self.steps + 1):
                row = {"n": n, "seed": seed, "step": t}
                row.update({k: float(self.metrics[k][r, t]) for k in names})
                yield row

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """Final values per N with mean, std, min and max across seeds, plus whole-run statistics."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for n in sorted({n for n, _ in self.runs}):
            rows = [r for r, (nn, _) in enumerate(self.runs) if nn == n]
            stats: dict[str, np.ndarray] = {k: self.metrics[k][rows, -1] for k in STATE_METRICS}
            q = self.metrics["q_pos"][rows]
            stats["q_pos_gain"] = q[:, -1] - q[:, 0]
            # share of steps in which Q_pos fell: "steadier growth" in numbers
            stats["frac_steps_q_pos_fell"] = (np.diff(q, axis=1) < 0).mean(axis=1)
            stats["mean_abs_unsampled_term"] = np.nanmean(
                np.abs(self.metrics["unsampled_term"][rows]), axis=1
            )
            if "measured_delta" in self.metrics:
                pred, meas = (
                    self.metrics["predicted_delta"][rows, 1:],
                    self.metrics["measured_delta"][rows, 1:],
                )
                stats["max_rel_linearisation_error"] = np.max(
                    np.abs(meas - pred) / np.maximum(np.abs(pred), 1e-300), axis=1
                )
            out[str(n)] = {
                k: {
                    "mean": float(v.mean()),
                    "std": float(v.std()),
                    "min": float(v.min()),
                    "max": float(v.max()),
                }
                for k, v in stats.items()
            }
        return out


def initial_logits(
    vocab_size: int,
    num_correct: int,
    init: str,
    *,
    correct_logit: float = 3.0,
    anchor_logit: float = 5.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(V,) starting logits. P = tokens [0, num_correct); in ``seeded`` the anchor is token num_correct (not in P)."""
    if init not in ("seeded", "zero"):
        raise ValueError(f"init must be 'seeded' or 'zero', got {init!r}")
    z = torch.zeros(vocab_size, dtype=dtype)
    if init == "seeded":
        z[:num_correct] = correct_logit
        z[num_correct] = anchor_logit
    return z


def _check(rollouts, seeds, steps, vocab_size, num_correct, init, lr, r_correct, r_wrong) -> None:
    if not rollouts or any(int(n) < 1 for n in rollouts):
        raise ValueError(f"rollouts must be positive integers, got {list(rollouts)}")
    if len(set(rollouts)) != len(rollouts) or len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError("rollouts and seeds must be non-empty lists without repeats")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    extra = 1 if init == "seeded" else 0  # the anchor needs one token outside P
    if not 1 <= num_correct <= vocab_size - max(extra, 1):
        raise ValueError(
            f"num_correct must be in [1, vocab_size - {max(extra, 1)}], got {num_correct} "
            f"with vocab_size {vocab_size}"
        )
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if r_correct < r_wrong:
        raise ValueError(f"r_correct ({r_correct}) must be >= r_wrong ({r_wrong})")


def _sorted_uniforms(n: int, gens: list[np.random.Generator]) -> torch.Tensor:
    """(len(gens), n) sorted uniforms on (0, 1), float64, one row per generator: the partial sums of n + 1
    exponential draws divided by their total (exponential spacings), so no sort is needed."""
    e = np.empty((len(gens), n + 1))
    for row, gen in zip(e, gens, strict=True):
        gen.standard_exponential(out=row)
    cs = torch.cumsum(torch.from_numpy(e), -1)
    return cs[:, :-1] / cs[:, -1:]


class _Sampler:
    """N_r i.i.d. draws per row r of a (R, V) policy, returned as the sorted distinct flat ids ``r * V + token`` drawn
    and their counts, which are multinomial(N_r, p_r / Σ p_r).

    Inverse CDF: row r's N_r sorted float64 uniforms (from ``gens[r]`` alone) each pick the token whose CDF interval
    holds them. Rows are taken in runs of consecutive rows with equal N, and every operation is row-wise, so a row's
    draws do not depend on which other rows share the batch. Two ways, chosen by N and V only:

    - Many draws (N · block > V / 4, e.g. N = 51,200): the CDF is ``torch.cumsum(p)`` (float32 running sums
      accumulated in float64, as before this sampler) and the uniforms are located with numpy's ``interp``: its search
      starts at the previous answer, so sorted queries cost ~15 ns each against ~40-60 ns for ``torch.searchsorted``'s
      fresh binary searches (measured at N = 51,200, V = 128,000).
    - Few draws: no full CDF (a cumsum over V costs ~1 ns per token per row). The row is cut into blocks of ``block``
      tokens; a uniform picks a block from the block masses (float32 sums: a block's probability carries a relative
      rounding of ~1e-7), then a token inside it from that block's float64 running sums. A two-stage inverse CDF of
      the same distribution.
    """

    def __init__(self, ns: list[int], gens: list[np.random.Generator], vocab_size: int):
        self.vocab_size = vocab_size
        self.index = np.arange(vocab_size, dtype=np.float64)
        self.groups = []  # (first row, last row + 1, N, generators, block or 0 for the interp path)
        start = 0
        while start < len(ns):
            stop = start + 1
            while stop < len(ns) and ns[stop] == ns[start]:
                stop += 1
            n = ns[start]
            # block ≈ sqrt(V / N) balances the block masses (V / block) against the in-block work (N · block)
            block = min(512, max(8, 1 << max(0, math.ceil(math.log2(math.sqrt(vocab_size / n))))))
            self.groups.append(
                (start, stop, n, gens[start:stop], block if n * block <= vocab_size // 4 else 0)
            )
            start = stop

    def __call__(self, p: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Return (uid, cnt): sorted distinct flat ids drawn and their counts (int64 numpy arrays)."""
        V = self.vocab_size
        uids, cnts = [], []
        for start, stop, n, gens, block in self.groups:
            u = _sorted_uniforms(n, gens)  # (S, n)
            if block:
                ids = _blocked_inverse_cdf(p[start:stop], u, block).numpy()
            else:
                cdf, un = torch.cumsum(p[start:stop], -1).numpy(), u.numpy()  # (S, V), (S, n)
                ids = np.empty(un.shape, dtype=np.int64)
                for i in range(len(un)):
                    self._search(ids[i], un[i], cdf[i])
            ids += (np.arange(start, stop) * V)[:, None]
            flat = ids.reshape(-1)  # sorted: rows in order, each row sorted
            first = np.empty(flat.size, dtype=bool)
            first[0] = True
            np.not_equal(flat[1:], flat[:-1], out=first[1:])
            at = np.flatnonzero(first)
            uids.append(flat[at])
            cnts.append(np.diff(at, append=flat.size))
        return (np.concatenate(uids), np.concatenate(cnts)) if len(uids) > 1 else (uids[0], cnts[0])

    def _search(self, out: np.ndarray, u: np.ndarray, cdf: np.ndarray) -> None:
        """out = #{k : cdf_k <= u · cdf_{V-1}} for sorted u: interp gives j + a fraction for cdf_j <= x < cdf_{j+1}
        and -1 below cdf_0. Scaling u by the total (which rounds near, not at, 1) draws from p / Σp exactly."""
        out[:] = np.interp(u * cdf[-1], cdf, self.index, left=-1.0)  # truncated to int64
        out += 1
        np.minimum(out, self.vocab_size - 1, out=out)  # x = cdf_{V-1} after rounding: the last token


def _blocked_inverse_cdf(p: torch.Tensor, u: torch.Tensor, block: int) -> torch.Tensor:
    """Token ids (S, n) for sorted uniforms ``u`` (S, n) in the rows of ``p`` (S, V), by block then token."""
    S, V = p.shape
    n = u.shape[1]
    full = V - V % block
    mass = p[:, :full].reshape(S, -1, block).sum(-1)  # (S, V // block)
    if full < V:
        mass = torch.cat([mass, p[:, full:].sum(-1, keepdim=True)], 1)
    mass = mass.double()
    ends = mass.cumsum(-1)  # (S, nb)
    starts = torch.cat([torch.zeros(S, 1, dtype=mass.dtype), ends], 1)  # (S, nb + 1)
    t = u * ends[:, -1:]  # (S, n)
    b = torch.searchsorted(ends, t, right=True).clamp_(max=mass.shape[1] - 1)  # starts[b] <= t < ends[b]
    v = (t - starts.gather(1, b)) / mass.gather(1, b)  # position inside the block, in [0, 1)
    tok = b[..., None] * block + torch.arange(block)  # (S, n, block)
    vals = p.gather(1, tok.clamp(max=V - 1).view(S, -1)).view(S, n, block).double()
    if full < V:
        vals.masked_fill_(tok >= V, 0.0)  # the short last block
    w = vals.cumsum_(-1)  # running sums inside the block
    j = (w <= v[..., None] * w[..., -1:]).sum(-1).clamp_(max=block - 1)
    return (b * block + j).clamp_(max=V - 1)


@dataclass
class _Batch:
    """One step's draws of every run, reduced once for the gradient and the Theorem 1 diagnostics.

    ``uid``: the distinct drawn flat ids r * V + token, sorted; ``cnt``: their multiplicities and ``p`` their
    probabilities (float64 numpy arrays). Segment 2r + c holds run r's distinct tokens of class c (0: in P, 1: not),
    ``seg_len`` their number. ``sums[q, r, c]`` (torch float64) adds over segment 2r + c: q = 0: p, 1: p²,
    2: count·p, 3: count.
    """

    uid: np.ndarray
    cnt: np.ndarray
    p: np.ndarray
    seg_len: np.ndarray
    sums: torch.Tensor


def _batch(p: torch.Tensor, draws: tuple[np.ndarray, np.ndarray], K: int) -> _Batch:
    """Reduce the draws (sorted distinct flat ids and counts, as ``_Sampler`` returns them) against ``p`` (R, V)."""
    R, V = p.shape
    uid, cnt_i = draws
    U = len(uid)
    cols = np.empty((4, U + 1))  # the four quantities to add; the trailing 0 closes an empty last segment
    cols[:, U] = 0.0
    pv, cnt = cols[0, :U], cols[3, :U]
    pv[:] = p.detach().reshape(-1).numpy()[uid]
    cnt[:] = cnt_i
    np.multiply(pv, pv, out=cols[1, :U])
    np.multiply(cnt, pv, out=cols[2, :U])
    starts = np.searchsorted(uid, (np.arange(R)[:, None] * V + np.array([0, K])).ravel())  # (2R,)
    seg_len = np.diff(starts, append=U)
    # sequential float64 sums over each segment: a run's sums depend on its own draws only
    sums = np.add.reduceat(cols, starts, axis=1)
    sums[:, seg_len == 0] = 0.0  # reduceat returns the element at an empty segment's start
    return _Batch(uid=uid, cnt=cnt, p=pv, seg_len=seg_len, sums=torch.from_numpy(sums).view(4, R, 2))


def _batch_terms(batch, q_pos, sq_pos, sq_neg, lr, ns, r_correct, r_wrong) -> dict[str, torch.Tensor]:
    """Theorem 1 for each run's batch (set semantics). Returns (R,) float64 tensors.

    ``q_pos`` = Σ_P p, ``sq_pos`` = Σ_P p², ``sq_neg`` = Σ_{V∖P} p² over the whole vocabulary, (R,) float64.
    Sampled sums are float64 sums over the distinct drawn tokens; the unsampled second moments are differences of
    sums (``brorl.theory.mass_balance`` is the exact float64 reference).
    """
    s = batch.sums
    p_pos, p_neg, a2, b2 = s[0, :, 0], s[0, :, 1], s[1, :, 0], s[1, :, 1]
    q_neg = 1.0 - q_pos
    u_pos2, u_neg2 = sq_pos - a2, sq_neg - b2
    s_r = r_correct * p_pos + r_wrong * p_neg
    scale = lr / ns.double()
    return {
        "s_r": s_r,
        "sampled_correct_term": scale * (r_correct - s_r) * q_neg * a2,
        "sampled_wrong_term": scale * (s_r - r_wrong) * q_pos * b2,
        "unsampled_term": scale * s_r * (q_pos * u_neg2 - q_neg * u_pos2),
    }


def _paper_grad(p, batch, ns, r_correct, r_wrong, out) -> torch.Tensor:
    """Closed-form gradient of L = -(1/N) Σ_j r̃_j p_{y_j} with batch-mean-centred rewards, into ``out`` (R, V).

    d p_y / d z_k = p_y (δ_yk - p_k) gives grad_k = -(p_k / N)(c_k - Σ_i c_i p_i) = p_k (S - c_k) / N, where c_k is
    the summed centred reward of the draws of token k (count × centred reward) and S = Σ_i c_i p_i (float64).
    Undrawn tokens (c_k = 0) get p_k S / N in one dense pass; the drawn ones are then overwritten, computed in
    float64 and rounded once.
    """
    n = ns.double()
    n_correct = batch.sums[3, :, 0]
    mean_r = (r_correct * n_correct + r_wrong * (n - n_correct)) / n  # (R,)
    centred = torch.stack([r_correct - mean_r, r_wrong - mean_r], -1)  # per (run, class)  # (R, 2)
    s_over_n = (batch.sums[2] * centred).sum(-1) / n  # S / N  # (R,)
    torch.mul(p, s_over_n.to(p.dtype)[:, None], out=out)
    per_seg = torch.stack([s_over_n[:, None].expand(-1, 2), centred / n[:, None]]).view(2, -1).numpy()
    a, b = (np.repeat(x, batch.seg_len) for x in per_seg)  # S / N and centred reward / N of each drawn token
    flat = out.view(-1).numpy()
    flat[batch.uid] = (batch.p * (a - batch.cnt * b)).astype(flat.dtype)  # cast first: a faster scatter
    return out


def _theorem_step(p, sampled, K, lr, ns, r_correct, r_wrong) -> torch.Tensor:
    """Δz = (η/N) p (R - S_R) with set semantics: R_c / R_w on distinct sampled tokens, 0 on unsampled."""
    reward = torch.zeros_like(p)
    reward[:, :K] = r_correct
    reward[:, K:] = r_wrong
    reward *= sampled
    s_r = (reward * p).sum(-1, keepdim=True)
    return (lr / ns.to(p.dtype))[:, None] * p * (reward - s_r)


def simulate(
    rollouts: list[int],
    seeds: list[int],
    *,
    steps: int = 1000,
    vocab_size: int = 128_000,
    num_correct: int = 10_000,
    init: str = "seeded",
    correct_logit: float = 3.0,
    anchor_logit: float = 5.0,
    mode: str = "paper",
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    r_correct: float = 1.0,
    r_wrong: float = -1.0,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Run every (N, seed) pair for ``steps`` steps and return per-step trajectories.

    ``betas``, ``eps`` and ``weight_decay`` are AdamW's (paper mode only). ``progress(t)`` is called after
    each step. The theorem mode ignores the optimizer and takes plain gradient steps of size ``lr``.
    """
    if mode not in ("paper", "theorem"):
        raise ValueError(f"mode must be 'paper' or 'theorem', got {mode!r}")
    _check(rollouts, seeds, steps, vocab_size, num_correct, init, lr, r_correct, r_wrong)
    runs = [(int(n), int(s)) for n in rollouts for s in seeds]
    R, K = len(runs), num_correct
    ns = torch.tensor([n for n, _ in runs])
    gens = [np.random.default_rng(int(s) * 1_000_003 + n) for n, s in runs]
    z0 = initial_logits(
        vocab_size, K, init, correct_logit=correct_logit, anchor_logit=anchor_logit, dtype=dtype
    )
    z = z0.expand(R, -1).clone().requires_grad_(mode == "paper")  # (R, V)
    opt = _adamw(z, lr, betas, eps, weight_decay) if mode == "paper" else None
    names = STATE_METRICS + STEP_METRICS + (THEOREM_METRICS if mode == "theorem" else ())
    out = {k: torch.full((R, steps + 1), float("nan"), dtype=torch.float64) for k in names}
    grad = torch.empty(R, vocab_size, dtype=dtype)
    sample = _Sampler(ns.tolist(), gens, vocab_size)
    start = time.perf_counter()
    with torch.no_grad():
        p = torch.softmax(z, -1)
        p0_pos = p[:, :K].clone()  # (R, K)
        for t in range(steps + 1):
            pk = p[:, :K]
            q_pos = pk.sum(-1, dtype=torch.float64)
            drop = p0_pos - pk  # < 0 exactly where pk > p0_pos  # (R, K)
            out["q_pos"][:, t] = q_pos
            out["improved_frac"][:, t] = (drop < 0).sum(-1).double() / K
            out["worst_drop"][:, t] = drop.amax(-1).clamp(min=0).double()
            if t == steps:
                break
            batch = _batch(p, sample(p), K)
            sq_pos = torch.linalg.vector_norm(pk, dim=-1, dtype=torch.float64).square()
            # Σ p² over the ~10⁵ wrong tokens, accumulated in p's dtype: ~1e-7 relative in float32, ample for a
            # diagnostic (a float64 accumulation of the float32 values costs a slow extra pass)
            sq_neg = torch.linalg.vector_norm(p[:, K:], dim=-1).double().square()
            terms = _batch_terms(batch, q_pos, sq_pos, sq_neg, lr, ns, r_correct, r_wrong)
            for k, v in terms.items():
                out[k][:, t + 1] = v
            if mode == "paper":
                z.grad = _paper_grad(p, batch, ns, r_correct, r_wrong, grad)
                opt.step()
                p = torch.softmax(z, -1)
            else:
                # 0/1 mask of drawn tokens, in the gradient buffer (unused in this mode)  # (R, V)
                sampled = grad.zero_()
                sampled.view(-1)[torch.from_numpy(batch.uid)] = 1.0
                z += _theorem_step(p, sampled, K, lr, ns, r_correct, r_wrong)
                p = torch.softmax(z, -1)
                out["predicted_delta"][:, t + 1] = sum(terms[k] for k in STEP_METRICS[1:])
                out["measured_delta"][:, t + 1] = p[:, :K].sum(-1, dtype=torch.float64) - q_pos
            if progress is not None:
                progress(t + 1)
    return SimulationResult(
        runs=runs,
        steps=steps,
        mode=mode,
        metrics={k: v.numpy() for k, v in out.items()},
        seconds=time.perf_counter() - start,
    )


def _adamw(z, lr, betas, eps, weight_decay) -> torch.optim.Optimizer:
    """PyTorch's AdamW on the (R, V) logits: elementwise, so one optimizer equals R independent ones."""
    try:
        return torch.optim.AdamW([z], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):  # fused CPU kernels arrived in torch 2.4
        return torch.optim.AdamW([z], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=True)
