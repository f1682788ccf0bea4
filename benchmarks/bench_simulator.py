"""How fast is the vectorised token-level simulator against a plain per-(N, seed) loop, in the same run?

The goal (issue "foundation and simulator"): the paper's whole sweep (N ∈ {4, 8, 16, 512, 51200}, 1000 steps,
3 seeds, V = 128,000) in at most 15 s on a 2-core machine. The baseline is what one would write first: one run at
a time in float64, ``torch.multinomial`` draws, autograd through the surrogate, ``torch.optim.AdamW``, and the same
per-step metrics (Q_pos, improved fraction, worst drop, Theorem 1's terms via ``brorl.theory.mass_balance``).

    python benchmarks/bench_simulator.py                 # full sweep, both implementations (~2 min)
    python benchmarks/bench_simulator.py --steps 100     # quicker; the ratio is what compares across runs

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from brorl.theory import mass_balance
from brorl.theory.simulator import initial_logits, simulate


def plain_loop(rollouts, seeds, steps, vocab_size, num_correct) -> dict[str, float]:
    """The straightforward implementation, one (N, seed) run after another, float64."""
    correct = np.arange(vocab_size) < num_correct
    finals = {}
    for n in rollouts:
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + n)
            z = initial_logits(vocab_size, num_correct, "seeded", dtype=torch.float64).requires_grad_(True)
            opt = torch.optim.AdamW([z], lr=1e-3)
            with torch.no_grad():
                p0 = torch.softmax(z, -1)[:num_correct].clone()
            for _ in range(steps):
                p = torch.softmax(z, -1)
                ids = torch.multinomial(p.detach(), n, replacement=True, generator=gen)
                rewards = torch.where(ids < num_correct, 1.0, -1.0).double()
                loss = -((rewards - rewards.mean()) * p[ids]).sum() / n
                opt.zero_grad()
                loss.backward()
                mass_balance(p.detach().numpy(), correct, ids.numpy(), lr=1e-3)  # the step's Theorem 1 terms
                opt.step()
                with torch.no_grad():
                    pk = torch.softmax(z, -1)[:num_correct]
                    q_pos = pk.sum().item()
                    _ = (pk > p0).double().mean().item(), (p0 - pk).max().clamp(min=0).item()
            finals[f"{n}/{seed}"] = q_pos
    return finals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rollouts", type=int, nargs="+", default=[4, 8, 16, 512, 51200])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--vocab-size", type=int, default=128_000)
    ap.add_argument("--num-correct", type=int, default=10_000)
    args = ap.parse_args()
    sizes = dict(vocab_size=args.vocab_size, num_correct=args.num_correct)

    simulate([4], [0], steps=2, vocab_size=1000, num_correct=10)  # warm-up: first-call allocations
    t0 = time.perf_counter()
    fast = simulate(args.rollouts, args.seeds, steps=args.steps, **sizes)
    fast_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    plain_loop(args.rollouts, args.seeds, args.steps, **sizes)
    plain_s = time.perf_counter() - t0

    print(
        json.dumps(
            {
                "benchmark": "simulator",
                "steps": args.steps,
                "rollouts": args.rollouts,
                "seeds": args.seeds,
                "vocab_size": args.vocab_size,
                "vectorised_seconds": round(fast_s, 2),
                "plain_loop_seconds": round(plain_s, 2),
                "speedup_vs_plain_loop": round(plain_s / fast_s, 2),
                "vectorised_seconds_per_1000_steps": round(fast_s * 1000 / max(args.steps, 1), 2),
                "final_q_pos_n_max": float(fast.metrics["q_pos"][-1, -1]),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
