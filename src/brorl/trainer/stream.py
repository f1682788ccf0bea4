"""A deterministic, resumable stream of training problems, and the group record the trainer passes between stages."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from brorl.data import Problem

__all__ = ["Group", "ProblemStream"]


class ProblemStream:
    """Problems in a seeded order, reshuffled each epoch. Its whole state is one integer, ``position``.

    The problem at position i is ``problems[perm_e[i mod len]]`` with e = i // len and perm_e a permutation seeded by
    (seed, e): resuming at a saved position gives exactly the same sequence, and i is a unique global key for the
    rollout engine's random streams.
    """

    def __init__(self, problems: list[Problem], seed: int, position: int = 0) -> None:
        if not problems:
            raise ValueError("the training set is empty: check --tasks and --train-size")
        self.problems, self.seed, self.position = problems, seed, position
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.problems), generator=g)
        return self._perm

    def take(self, k: int) -> list[tuple[int, Problem]]:
        """The next k (global position, problem) pairs."""
        out = []
        for _ in range(k):
            epoch, i = divmod(self.position, len(self.problems))
            out.append((self.position, self.problems[int(self._order(epoch)[i])]))
            self.position += 1
        return out

    @property
    def epoch(self) -> float:
        return self.position / len(self.problems)


@dataclass
class Group:
    """One prompt and its N rollouts, scored. Tensors are trimmed to the group's longest response T_g."""

    key: int  # the problem's global stream position
    problem: Problem
    prompt_ids: torch.Tensor  # (P,)
    response_ids: torch.Tensor  # (N, T_g)
    mask: torch.Tensor  # (N, T_g) bool
    rollout_logp: torch.Tensor  # (N, T_g) log-probs under the sampling distribution
    rewards: torch.Tensor  # (N,) float32
    correct: torch.Tensor  # (N,) bool
    step: int  # the step whose policy generated it

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())
