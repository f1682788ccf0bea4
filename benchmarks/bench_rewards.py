"""Reward scoring throughput at BroRL's N: 8 prompts x 512 math answers with realistic repetition.

Baseline (same run): every answer scored serially in-process with ``verify_math_answer``, no de-duplication, as
frameworks that loop over samples do (BRORL.md §7 point 5). Contenders: ``RewardPool`` with within-group
de-duplication, in-process (``workers=0``) and with 2 worker processes. Every timing starts with math-verify
parsing caches cold (the baseline still gains from caching within its own run, as the library would) (pool start-up excluded: it happens once
per run; it is reported separately). A second baseline also bypasses the gold/answer parse cache (math-verify
as shipped, the way a per-sample loop calls it). Prints one JSON object.

    python benchmarks/bench_rewards.py [--prompts 8] [--n 512] [--workers 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from brorl.data import Problem
from brorl.rewards import RewardPool
from brorl.rewards.verifiers import _equal, _parse_math, verify_math_answer


def make_batch(prompts: int, n: int, rng: np.random.Generator) -> tuple[list[Problem], list[str]]:
    """Each group: the gold answer in a few spellings, a Zipf-weighted tail of wrong answers, some one-offs.

    Weights mimic a policy that is right ~40% of the time and concentrates its errors on a few values; about 5%
    of samples are unique (garbled) answers, so most of the 512 answers repeat.
    """
    problems, completions = [], []
    for b in range(prompts):
        num, den = int(rng.integers(1, 9)), int(rng.integers(2, 12))
        gold = f"\\frac{{{num}}}{{{den}}}"
        problems.append(
            Problem(
                uid=f"bench/{b}",
                source="bench",
                category="math",
                question=f"q{b}",
                answer=gold,
                solution=None,
                verifier="math",
            )
        )
        right = [gold, f"{num}/{den}", f"\\dfrac{{{num}}}{{{den}}}"]
        wrong = [f"\\frac{{{num + k}}}{{{den}}}" for k in range(1, 16)]
        zipf = 1.0 / np.arange(1, len(wrong) + 1)
        for _ in range(n):
            u = rng.random()
            if u < 0.4:
                answer = right[int(rng.integers(len(right)))]
            elif u < 0.95:
                answer = wrong[int(rng.choice(len(wrong), p=zipf / zipf.sum()))]
            else:
                answer = f"{rng.integers(10**6)}/{den}"  # a one-off
            completions.append(f"Let me think... the result is <answer>{answer}</answer>")
    return problems, completions


def serial_baseline(
    problems: list[Problem], completions: list[str], n: int, cache: bool
) -> tuple[float, np.ndarray]:
    """Score every completion in order; ``cache=False`` bypasses our parse cache (math-verify as shipped)."""
    parse = _parse_math if cache else _parse_math.__wrapped__
    start = time.perf_counter()
    rewards = []
    for i, completion in enumerate(completions):
        inner = completion.split("<answer>")[-1].split("</answer>")[0]
        rewards.append(_equal(parse(inner, True), problems[i // n].answer or ""))
    return time.perf_counter() - start, np.asarray(rewards, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    problems, completions = make_batch(args.prompts, args.n, np.random.default_rng(args.seed))
    total = len(completions)
    verify_math_answer("1", "1")  # import and warm math-verify outside the timings

    # every timing starts from a cold parse cache, so the baseline's cache cannot help the contenders
    _parse_math.cache_clear()
    naive_s, naive_rewards = serial_baseline(problems, completions, args.n, cache=False)
    _parse_math.cache_clear()
    base_s, base_rewards = serial_baseline(problems, completions, args.n, cache=True)
    np.testing.assert_array_equal(naive_rewards, base_rewards)
    _parse_math.cache_clear()
    with RewardPool(workers=0) as pool:
        inproc = pool.score(problems, completions, args.n)
    t0 = time.perf_counter()
    with RewardPool(workers=args.workers, timeout_s=30.0) as pool:
        pool.score(problems[:1], completions[: args.n], args.n)  # waits until the workers are up
        startup_s = time.perf_counter() - t0
        parallel = pool.score(problems, completions, args.n)
    for result in (inproc, parallel):  # same rewards as the baseline, or the speed is meaningless
        np.testing.assert_array_equal(result.rewards, base_rewards)
    out = {
        "answers": total,
        "distinct_answers_per_group": inproc.metrics["reward/distinct_answers_per_group"],
        "mean_reward": float(base_rewards.mean()),
        "serial_no_dedup_no_cache_answers_per_s": total / naive_s,
        "serial_no_dedup_answers_per_s": total / base_s,
        "dedup_inprocess_answers_per_s": total / inproc.metrics["perf/scoring_seconds"],
        f"dedup_{args.workers}_workers_answers_per_s": total / parallel.metrics["perf/scoring_seconds"],
        "speedup_dedup_inprocess_vs_no_cache": naive_s / inproc.metrics["perf/scoring_seconds"],
        "speedup_dedup_inprocess": base_s / inproc.metrics["perf/scoring_seconds"],
        f"speedup_dedup_{args.workers}_workers": base_s / parallel.metrics["perf/scoring_seconds"],
        "pool_startup_seconds": startup_s,
    }
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
