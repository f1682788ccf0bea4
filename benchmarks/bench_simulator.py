"""How fast is the vectorised token-level simulator against a plain per-(N, seed) loop, in the same run?

The goal (issue "foundation and simulator"): the paper's whole sweep (N ∈ {4, 8, 16, 512, 51200}, 1000 steps,
3 seeds, V = 128,000) in at most 15 s on a 2-core machine. The baseline is what one would write first: one run at
a time in float64, ``torch.multinomial`` draws, autograd through the surrogate, ``torch.optim.AdamW``, and the same
per-step metrics (Q_pos, improved fraction, worst drop, Theorem 1's terms via ``brorl.theory.mass_balance``).

    python benchmarks/bench_simulator.py                 # full sweep, both implementations (~1 min)
    python benchmarks/bench_simulator.py --steps 100     # quicker; the ratio is what compares across runs

    # this simulator against an earlier one, interleaved in one process (the machine is shared: compare ratios)
    git show HEAD:src/brorl/theory/simulator.py > /tmp/sim_ref.py
    OMP_NUM_THREADS=1 python benchmarks/bench_simulator.py --steps 100 --reference /tmp/sim_ref.py --repeats 5 \
        --no-plain-loop

Prints one JSON object; ``--reference`` adds ``reference_seconds`` (median), ``speedup_vs_reference`` (median of
the per-repeat ratios) and the per-repeat times.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
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


def load_reference(path: str):
    """Import another version of ``brorl/theory/simulator.py`` from a file, as module ``simulator_reference``."""
    spec = importlib.util.spec_from_file_location("simulator_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rollouts", type=int, nargs="+", default=[4, 8, 16, 512, 51200])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--vocab-size", type=int, default=128_000)
    ap.add_argument("--num-correct", type=int, default=10_000)
    ap.add_argument("--reference", metavar="PATH", help="another simulator.py to time against, interleaved")
    ap.add_argument("--repeats", type=int, default=1, help="timings of each simulator (median reported)")
    ap.add_argument("--no-plain-loop", action="store_true", help="skip the plain loop (its keys are null)")
    args = ap.parse_args()
    sizes = dict(vocab_size=args.vocab_size, num_correct=args.num_correct)
    sims = {"vectorised": simulate}
    if args.reference:
        sims["reference"] = load_reference(args.reference).simulate

    times: dict[str, list[float]] = {name: [] for name in sims}
    for sim in sims.values():
        sim([4], [0], steps=2, vocab_size=1000, num_correct=10)  # warm-up: first-call allocations
    for i in range(args.repeats):
        for name in list(sims)[:: 1 if i % 2 == 0 else -1]:  # alternate the order against drifting load
            t0 = time.perf_counter()
            result = sims[name](args.rollouts, args.seeds, steps=args.steps, **sizes)
            times[name].append(time.perf_counter() - t0)
            if name == "vectorised":
                fast = result
    fast_s = statistics.median(times["vectorised"])

    plain_s = None
    if not args.no_plain_loop:
        t0 = time.perf_counter()
        plain_loop(args.rollouts, args.seeds, args.steps, **sizes)
        plain_s = time.perf_counter() - t0

    report = {
        "benchmark": "simulator",
        "steps": args.steps,
        "rollouts": args.rollouts,
        "seeds": args.seeds,
        "vocab_size": args.vocab_size,
        "vectorised_seconds": round(fast_s, 2),
        "plain_loop_seconds": None if plain_s is None else round(plain_s, 2),
        "speedup_vs_plain_loop": None if plain_s is None else round(plain_s / fast_s, 2),
        "vectorised_seconds_per_1000_steps": round(fast_s * 1000 / max(args.steps, 1), 2),
        "final_q_pos_n_max": float(fast.metrics["q_pos"][-1, -1]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    if args.reference:
        ratios = [r / v for r, v in zip(times["reference"], times["vectorised"], strict=True)]
        report |= {
            "reference": args.reference,
            "reference_seconds": round(statistics.median(times["reference"]), 2),
            "speedup_vs_reference": round(statistics.median(ratios), 2),
            "vectorised_seconds_each": [round(x, 2) for x in times["vectorised"]],
            "reference_seconds_each": [round(x, 2) for x in times["reference"]],
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
