"""The mass balance equation (BroRL Theorem 1) and the expected unsampled second moment (Lemma 2, Corollary 3).

Setting (docs/theory.md has the notation table): one categorical policy p = softmax(z) over V tokens, a set P of
correct tokens, N i.i.d. draws. With set semantics (each distinct sampled token counted once), one gradient step
on the linear surrogate L = -(1/N) Σ_j R_j p_j moves the logits by Δz_j = (η/N) p_j (R_j - S_R), and to first order

    ΔQ_pos = (η/N) [ (R_c - S_R) Q_neg A_2                      sampled-correct term   (≥ 0)
                   + (S_R - R_w) Q_pos B_2                      sampled-wrong term     (≥ 0)
                   + S_R (Q_pos U_neg,2 - Q_neg U_pos,2) ]      unsampled term         (either sign)

Everything is computed in float64 whatever the input dtype; inputs may be numpy arrays or torch tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MassBalance",
    "expected_unsampled_second_moment",
    "mass_balance",
    "pass_at_k_from_mass",
]


@dataclass(frozen=True)
class MassBalance:
    """Theorem 1 quantities of one batch. The three ``*_term`` fields include the η/N factor."""

    q_pos: float  # Σ_{i∈P} p_i
    q_neg: float  # 1 - q_pos
    p_pos: float  # Σ p_i over distinct sampled correct tokens (set A)
    p_neg: float  # Σ p_i over distinct sampled incorrect tokens (set B)
    a2: float  # Σ_{i∈A} p_i²
    b2: float  # Σ_{i∈B} p_i²
    u_pos2: float  # Σ p_i² over unsampled correct tokens
    u_neg2: float  # Σ p_i² over unsampled incorrect tokens
    s_r: float  # R_c·P_pos + R_w·P_neg, the batch "mood"
    sampled_correct_term: float  # (η/N)(R_c - S_R) Q_neg A_2
    sampled_wrong_term: float  # (η/N)(S_R - R_w) Q_pos B_2
    unsampled_term: float  # (η/N) S_R (Q_pos U_neg,2 - Q_neg U_pos,2)
    delta_q_pos: float  # the sum of the three terms: the first-order change of Q_pos


def _as_float64(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, on any device
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector, got shape {arr.shape}")
    return arr


def _as_mask(x: Any, size: int) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.shape != (size,):
        raise ValueError(f"correct mask has shape {arr.shape} but probs has shape ({size},); they must match")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError("correct mask must be boolean (or 0/1)")
        arr = arr.astype(bool)
    return arr


def _as_ids(x: Any, size: int) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"sampled must be a 1-D vector of token ids, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("sampled is empty: Theorem 1 needs at least one drawn token (N >= 1)")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.floor(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"sampled must hold integer token ids, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= size:
        raise ValueError(
            f"sampled ids must lie in [0, {size - 1}] (vocabulary of {size}); got range [{lo}, {hi}]"
        )
    return arr


def check_probs(probs: Any, *, atol: float | None = None) -> np.ndarray:
    """Return ``probs`` as float64 after checking it is a probability vector.

    The tolerance on Σp = 1 defaults to 1e-6 for float64 input and 1e-4 for lower precision, since a float32
    softmax over 10^5 tokens sums to 1 only within ~1e-5.
    """
    low_precision = str(getattr(probs, "dtype", "float64")) not in ("float64", "torch.float64")
    p = _as_float64(probs, "probs")
    if p.size == 0:
        raise ValueError("probs is empty")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains NaN or infinite values")
    if (p < 0).any():
        i = int(np.argmin(p))
        raise ValueError(f"probs must be non-negative; probs[{i}] = {p[i]:.3g}")
    total = float(p.sum())
    tol = atol if atol is not None else (1e-4 if low_precision else 1e-6)
    if abs(total - 1.0) > tol:
        raise ValueError(
            f"probs must sum to 1 (within {tol:g}); they sum to {total:.9g}. Normalise them first."
        )
    return p


def mass_balance(
    probs: Any,
    correct: Any,
    sampled: Any,
    *,
    r_correct: float = 1.0,
    r_wrong: float = -1.0,
    lr: float = 1.0,
) -> MassBalance:
    """Theorem 1 for one batch.

    Args:
        probs: (V,) probability vector p = softmax(z), numpy array or torch tensor.
        correct: (V,) boolean mask of the correct set P.
        sampled: (N,) integer ids of the N drawn tokens; repeats allowed, N = len(sampled).
        r_correct, r_wrong: R_c and R_w, the rewards of a sampled correct / incorrect token (R_c >= R_w).
        lr: the learning rate η.

    Returns:
        MassBalance with the batch statistics, the three terms (each including η/N) and their sum.
    """
    p = check_probs(probs)
    mask = _as_mask(correct, p.size)
    ids = _as_ids(sampled, p.size)
    if not (math.isfinite(r_correct) and math.isfinite(r_wrong)):
        raise ValueError("rewards must be finite")
    if r_correct < r_wrong:
        raise ValueError(f"r_correct (R_c = {r_correct}) must be >= r_wrong (R_w = {r_wrong})")
    if not math.isfinite(lr):
        raise ValueError(f"lr must be finite, got {lr}")
    n = ids.size
    in_sample = np.zeros(p.size, dtype=bool)
    in_sample[ids] = True  # set semantics: a token drawn k times is in the set once
    p2 = p * p
    q_pos = float(p[mask].sum())
    q_neg = 1.0 - q_pos
    a_set, b_set = in_sample & mask, in_sample & ~mask
    u_pos, u_neg = ~in_sample & mask, ~in_sample & ~mask
    p_pos, p_neg = float(p[a_set].sum()), float(p[b_set].sum())
    a2, b2 = float(p2[a_set].sum()), float(p2[b_set].sum())
    u_pos2, u_neg2 = float(p2[u_pos].sum()), float(p2[u_neg].sum())
    s_r = r_correct * p_pos + r_wrong * p_neg
    scale = lr / n
    t1 = scale * (r_correct - s_r) * q_neg * a2
    t2 = scale * (s_r - r_wrong) * q_pos * b2
    t3 = scale * s_r * (q_pos * u_neg2 - q_neg * u_pos2)
    return MassBalance(
        q_pos=q_pos,
        q_neg=q_neg,
        p_pos=p_pos,
        p_neg=p_neg,
        a2=a2,
        b2=b2,
        u_pos2=u_pos2,
        u_neg2=u_neg2,
        s_r=s_r,
        sampled_correct_term=t1,
        sampled_wrong_term=t2,
        unsampled_term=t3,
        delta_q_pos=t1 + t2 + t3,
    )


def expected_unsampled_second_moment(probs: Any, n: int, mask: Any = None) -> float:
    """Lemma 2 / Corollary 3: E[Σ_{unsampled i} p_i²] = Σ_i p_i² (1 - p_i)^n over ``mask`` (all tokens if None).

    Args:
        probs: (V,) probability vector.
        n: number of i.i.d. draws N (>= 0).
        mask: optional (V,) boolean mask (P for U_pos,2, its complement for U_neg,2).
    """
    p = check_probs(probs)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if mask is not None:
        p = p[_as_mask(mask, p.size)]
    # (1-p)^n = exp(n·log1p(-p)) stays accurate for tiny p and huge n; p = 1 gives exp(-inf) = 0 (0^0 = 1 at n=0).
    with np.errstate(divide="ignore"):
        survive = np.exp(n * np.log1p(-p)) if n > 0 else np.ones_like(p)
    return float(np.sum(p * p * survive))


def pass_at_k_from_mass(q_pos: Any, k: int) -> Any:
    """pass@k = 1 - (1 - Q_pos)^k for a prompt whose correct-answer mass is Q_pos (float or array)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    q = np.asarray(q_pos, dtype=np.float64)
    if np.any((q < 0) | (q > 1)) or not np.all(np.isfinite(q)):
        raise ValueError("q_pos must lie in [0, 1]")
    out = -np.expm1(k * np.log1p(-q)) if np.all(q < 1) else 1.0 - (1.0 - q) ** k
    return float(out) if out.ndim == 0 else out
