"""The token-level simulator of BroRL §4.1 (Figure 3), vectorised over every (N, seed) run at once.

One categorical "policy" over V tokens, a set P of correct tokens. Each step draws N i.i.d. tokens per run and
updates the logits. Two modes:

- ``paper`` (default, BRORL.md §3): rewards +1 / -1, centred by the batch mean; the linear surrogate
  L = -(1/N) Σ_j r̃_j p_{y_j} where duplicates count separately; AdamW (PyTorch defaults) at lr 1e-3.
- ``theorem``: Theorem 1's exact assumptions: set semantics (each distinct sampled token once, uncentred rewards
  R_c / R_w, unsampled tokens 0) and one plain gradient step Δz = (η/N) p (R - S_R). Each step's measured ΔQ_pos
  is recorded beside the first-order prediction of Theorem 1.

Speed: all R = len(rollouts) × len(seeds) runs live in one (R, V) tensor, so each step is a handful of dense
passes over R·V numbers. The gradient of the surrogate is written in closed form, grad_k = -(p_k/N)(c_k - Σ c p)
with c_k the summed (centred) reward of token k, so no autograd graph is built. Draws come from sorted uniforms
(exponential spacings) searched in the cumulative distribution, several times faster than ``torch.multinomial`` at
N = 51,200 and the same distribution of counts (the update depends on the counts only).

Randomness: run (N, seed) owns a ``torch.Generator`` seeded from (seed, N), so a run's draws do not depend on
which other runs share the batch.

    brorl simulate                       # the paper's sweep, ~20 s on 2 idle cores
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


def _draw_counts(
    cdf: torch.Tensor, ns: torch.Tensor, gens: list[torch.Generator], out: torch.Tensor
) -> torch.Tensor:
    """Counts of N_r i.i.d. draws per run from the rows of ``cdf`` (R, V), written into ``out`` (R, V)."""
    _R, V = cdf.shape
    flat = []
    for n in torch.unique(ns).tolist():
        rows = (ns == n).nonzero().flatten()
        # n + 1 exponential spacings, normalised, are n sorted uniforms; sorted queries search ~2x faster
        u = torch.stack([torch.rand(n + 1, dtype=torch.float64, generator=gens[r]) for r in rows])
        cs = torch.log1p_(u.neg_()).neg_().cumsum(-1)  # Exp(1) draws, summed  # (S, n + 1)
        u = (cs[:, :-1] / cs[:, -1:]).to(cdf.dtype)  # (S, n)
        ids = torch.searchsorted(cdf[rows], u).clamp_(max=V - 1)  # cdf[-1] may round below 1
        flat.append((ids + rows[:, None] * V).flatten())
    idx = torch.cat(flat)
    out.zero_().view(-1).index_add_(0, idx, torch.ones(idx.numel(), dtype=out.dtype))
    return out


def _batch_terms(p, sampled, K, lr, ns, r_correct, r_wrong, buf) -> dict[str, torch.Tensor]:
    """Theorem 1 for each run's batch (set semantics). Returns (R,) float64 tensors.

    ``sampled`` is the (R, V) 0/1 mask of drawn tokens in p's dtype. Unsampled second moments are differences of
    sums, accurate to ~1e-7 of Σp² in float32: plenty for a diagnostic (``brorl.theory.mass_balance`` is the
    exact float64 reference).
    """
    ps = torch.mul(p, sampled, out=buf)  # p on sampled tokens, 0 elsewhere  # (R, V)
    pk, psk = p[:, :K], ps[:, :K]
    pw, psw, sw = p[:, K:], ps[:, K:], sampled[:, K:]
    q_pos = pk.sum(-1).double()
    q_neg = 1.0 - q_pos
    p_pos, p_neg = psk.sum(-1).double(), torch.linalg.vecdot(pw, sw).double()
    a2, b2 = torch.linalg.vecdot(psk, pk).double(), torch.linalg.vecdot(psw, pw).double()
    u_pos2 = torch.linalg.vecdot(pk, pk).double() - a2
    u_neg2 = torch.linalg.vecdot(pw, pw).double() - b2
    s_r = r_correct * p_pos + r_wrong * p_neg
    scale = lr / ns.double()
    return {
        "s_r": s_r,
        "sampled_correct_term": scale * (r_correct - s_r) * q_neg * a2,
        "sampled_wrong_term": scale * (s_r - r_wrong) * q_pos * b2,
        "unsampled_term": scale * s_r * (q_pos * u_neg2 - q_neg * u_pos2),
    }


def _paper_grad(p, counts, K, ns, r_correct, r_wrong, out) -> torch.Tensor:
    """Closed-form gradient of L = -(1/N) Σ_j r̃_j p_{y_j} with batch-mean-centred rewards, into ``out`` (R, V).

    d p_y / d z_k = p_y (δ_yk - p_k) gives grad_k = -(p_k / N)(c_k - Σ_i c_i p_i), where c_k is the summed
    centred reward of the draws of token k (count × centred reward).
    """
    n = ns.to(p.dtype)[:, None]  # (R, 1)
    c_correct = counts[:, :K].sum(-1, keepdim=True)
    mean_r = (r_correct * c_correct + r_wrong * (n - c_correct)) / n  # (R, 1)
    g = torch.mul(counts, p, out=out)  # count_k p_k  # (R, V)
    g[:, :K] *= r_correct - mean_r
    g[:, K:] *= r_wrong - mean_r  # now c_k p_k
    s = g.sum(-1, keepdim=True)  # Σ c p  # (R, 1)
    return g.mul_(-1.0 / n).addcmul_(p, s / n)


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
    gens = [torch.Generator().manual_seed(int(s) * 1_000_003 + n) for n, s in runs]
    z0 = initial_logits(
        vocab_size, K, init, correct_logit=correct_logit, anchor_logit=anchor_logit, dtype=dtype
    )
    z = z0.expand(R, -1).clone().requires_grad_(mode == "paper")  # (R, V)
    opt = _adamw(z, lr, betas, eps, weight_decay) if mode == "paper" else None
    names = STATE_METRICS + STEP_METRICS + (THEOREM_METRICS if mode == "theorem" else ())
    out = {k: torch.full((R, steps + 1), float("nan"), dtype=torch.float64) for k in names}
    buf = torch.empty(R, vocab_size, dtype=dtype)
    grad = torch.empty(R, vocab_size, dtype=dtype)
    counts = torch.empty(R, vocab_size, dtype=dtype)
    start = time.perf_counter()
    with torch.no_grad():
        p = torch.softmax(z, -1)
        p0_pos = p[:, :K].clone()  # (R, K)
        for t in range(steps + 1):
            q_pos = p[:, :K].sum(-1, dtype=torch.float64)
            out["q_pos"][:, t] = q_pos
            out["improved_frac"][:, t] = (p[:, :K] > p0_pos).sum(-1).double() / K
            out["worst_drop"][:, t] = (p0_pos - p[:, :K]).amax(-1).clamp(min=0).double()
            if t == steps:
                break
            _draw_counts(torch.cumsum(p, -1), ns, gens, counts)
            sampled = counts.clamp(max=1)  # 0/1 mask of drawn tokens  # (R, V)
            for k, v in _batch_terms(p, sampled, K, lr, ns, r_correct, r_wrong, buf).items():
                out[k][:, t + 1] = v
            if mode == "paper":
                z.grad = _paper_grad(p, counts, K, ns, r_correct, r_wrong, grad)
                opt.step()
                p = torch.softmax(z, -1)
            else:
                z += _theorem_step(p, sampled, K, lr, ns, r_correct, r_wrong)
                p = torch.softmax(z, -1)
                terms = [out[k][:, t + 1] for k in STEP_METRICS[1:]]
                out["predicted_delta"][:, t + 1] = sum(terms)
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
