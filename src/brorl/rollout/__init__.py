"""Rollout generation: (prompts, N, sampling) -> a batch of responses with log-probs (BRORL.md §7 items 1 and 3).

    from brorl.rollout import HFRolloutEngine, SamplingParams
    batch = HFRolloutEngine(model, tokenizer).generate(prompts, n=512, params=SamplingParams(temperature=1.0))

Design, options and the reproducibility scheme: docs/rollout.md.
"""

from brorl.rollout.engine import KV_MODES, HFRolloutEngine, plan_chunks
from brorl.rollout.sampling import counter_uniforms, process_logits, sample_tokens
from brorl.rollout.types import RolloutBackend, RolloutBatch, RolloutStats, SamplingParams

__all__ = [
    "KV_MODES",
    "HFRolloutEngine",
    "RolloutBackend",
    "RolloutBatch",
    "RolloutStats",
    "SamplingParams",
    "counter_uniforms",
    "plan_chunks",
    "process_logits",
    "sample_tokens",
]
