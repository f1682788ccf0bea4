"""The rollout engine's public data types: sampling options, the returned batch, its stats, the backend protocol.

Shape alphabet (STYLE.md): B = prompts, N = rollouts per prompt, T = response tokens (the longest response in the
batch), V = vocabulary. Rollouts are flattened prompt-major: row ``b * N + s`` is sample ``s`` of prompt ``b``, so
``x.view(B, N, ...)`` recovers the groups.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch

FinishReason = Literal["stop", "length"]

# A prompt is text (encoded as-is, no special tokens added) or a sequence of token ids.
Prompt = str | Sequence[int] | torch.Tensor


@dataclass(frozen=True)
class SamplingParams:
    """How each rollout is sampled. Invalid values raise ``ValueError`` saying what to change."""

    max_new_tokens: int = 256
    """Most response tokens per rollout; a rollout that reaches it ends with finish reason ``"length"``."""
    temperature: float = 1.0
    """Logits are divided by this before top-k / top-p; 0 means greedy decoding (argmax, log-prob 0)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of most likely tokens whose mass reaches ``top_p``; 1 disables."""
    top_k: int = 0
    """Keep only the ``top_k`` most likely tokens (ties at the k-th value are kept); 0 disables."""
    stop: tuple[str, ...] = ()
    """Stop strings: a rollout ends (reason ``"stop"``) at the token whose decoded text completes one of them.
    The stop string stays in the response (and the rest of that token's text, if any)."""
    stop_token_ids: tuple[int, ...] = ()
    """Extra token ids that end a rollout, in addition to the tokenizer's / model's EOS ids."""
    ignore_eos: bool = False
    """Keep sampling past EOS (benchmarks use it so random-weight models produce full-length responses)."""
    seed: int = 0
    """Randomness key: the same (seed, prompt key, sample index, position) always draws the same uniform."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be finite and >= 0 (0 = greedy), got {self.temperature!r}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] (1 disables nucleus sampling), got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 disables), got {self.top_k!r}")
        if isinstance(self.stop, str):  # a bare string would silently become a tuple of characters
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SamplingParams:
        """Build from a plain dict (a preset section); unknown keys raise ``ValueError`` listing the valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown sampling option(s) {unknown}; valid options: {', '.join(valid)}")
        return cls(**dict(values))


@dataclass
class RolloutStats:
    """Counters and timings of one ``generate`` call, for the ``rollout/`` and ``perf/`` metrics."""

    num_prompts: int = 0
    num_samples: int = 0
    prompt_tokens: int = 0
    """Prompt tokens prefilled (each prompt once per chunk it appears in)."""
    tokens_generated: int = 0
    """Response tokens sampled (sum of response lengths)."""
    decode_steps: int = 0
    """Model forward passes in decode mode (one per position per chunk)."""
    chunks: int = 0
    peak_active: int = 0
    """Most sequences decoded in one forward pass."""
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    """Decode forwards plus sampling and stop checks."""
    seconds: float = 0.0
    """Wall time of the whole call."""

    def metrics(self) -> dict[str, float]:
        """Named metrics (definitions in docs/metrics.md)."""
        secs = max(self.seconds, 1e-9)
        return {
            "rollout/num_samples": float(self.num_samples),
            "rollout/tokens_generated": float(self.tokens_generated),
            "rollout/mean_response_tokens": self.tokens_generated / max(self.num_samples, 1),
            "rollout/chunks": float(self.chunks),
            "rollout/peak_active": float(self.peak_active),
            "perf/rollout_seconds": self.seconds,
            "perf/rollout_prefill_seconds": self.prefill_seconds,
            "perf/rollout_decode_seconds": self.decode_seconds,
            "perf/rollout_tokens_per_second": self.tokens_generated / secs,
            "perf/rollout_samples_per_second": self.num_samples / secs,
        }


@dataclass
class RolloutBatch:
    """B prompts × N rollouts, flattened prompt-major to B*N rows.

    ``logprobs`` are log-probabilities under the distribution each token was drawn from: the logits divided by the
    temperature, then top-k and top-p applied, then renormalised (0 for greedy). With top_k = 0 and top_p = 1 this
    equals ``log_softmax(logits / temperature)``, what a trainer recomputes, so it can be reused as the old policy's
    log-probs. ``raw_logprobs`` are ``log_softmax(logits)`` (temperature 1, no truncation): the model's own
    distribution.
    """

    response_ids: torch.Tensor
    """(B*N, T) int64, right-padded with ``pad_token_id``."""
    response_mask: torch.Tensor
    """(B*N, T) bool, True on response tokens (an ending EOS token is included)."""
    logprobs: torch.Tensor
    """(B*N, T) float32, sampling-distribution log-probs of the response tokens; 0 on padding."""
    raw_logprobs: torch.Tensor
    """(B*N, T) float32, temperature-1 untruncated model log-probs; 0 on padding."""
    group_index: torch.Tensor
    """(B*N,) int64, the prompt index b of each row."""
    finish_reason: list[FinishReason]
    """B*N entries: "stop" (EOS, stop token or stop string) or "length" (max_new_tokens reached)."""
    prompt_ids: list[torch.Tensor]
    """B 1-D int64 tensors, each prompt's tokens as fed to the model."""
    response_text: list[str]
    """B*N decoded responses (special tokens skipped)."""
    n: int
    """N, rollouts per prompt."""
    pad_token_id: int
    stats: RolloutStats = field(default_factory=RolloutStats)

    @property
    def num_prompts(self) -> int:
        return len(self.prompt_ids)

    @property
    def response_lengths(self) -> torch.Tensor:
        """(B*N,) int64 number of response tokens per row."""
        return self.response_mask.sum(dim=1)


@runtime_checkable
class RolloutBackend(Protocol):
    """Anything that turns (prompts, N, sampling) into a :class:`RolloutBatch` (this engine, later vLLM)."""

    def generate(
        self,
        prompts: Sequence[Prompt],
        n: int,
        params: SamplingParams,
        *,
        prompt_keys: Sequence[int] | None = None,
    ) -> RolloutBatch:
        """Sample ``n`` rollouts per prompt. ``prompt_keys`` are global prompt ids for the random streams
        (default ``0..B-1``); ranks pass their global indices so sharding does not change the samples."""
        ...
