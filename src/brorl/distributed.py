"""Data-parallel training across processes and machines with torch.distributed (docs/distributed.md).

Launch with PyTorch's own launcher; every rank runs the same command:

    torchrun --nproc_per_node 8 -m brorl train --preset brorl-paper --model ~/models/1.5b --out runs/x
    torchrun --nnodes 8 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m brorl train ...

This module owns the process group and the few collectives the trainer needs; the trainer decides what to send.

- ``launch_env`` reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and refuses a
  half-set-up environment with a message saying what is missing. Without them the run is one process.
- ``init_distributed`` picks the device (``auto``: cuda:LOCAL_RANK when CUDA is there, else CPU) and the backend
  (NCCL for CUDA, gloo for CPU), and opens a second gloo group for Python objects (group records, metrics), so
  pickles never travel through GPU memory.
- ``Dist`` is what the trainer holds: rank, world size, sums and maxima of tensors, object gathers, the exchange
  of group records between ranks, and the gradient all-reduce. With one process every collective is a no-op, so
  the trainer has one code path.
- ``batch_plan`` and ``shard`` are the pure rules for who does what; ``combine_metrics`` merges per-rank metrics.

Sharding the model itself across the ranks (``--sharding fsdp``, FSDP2) lives in ``brorl.sharding``; it replaces
the gradient all-reduce by a reduce-scatter and uses the same process group.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from brorl.config import ConfigError

__all__ = [
    "Dist",
    "LaunchEnv",
    "batch_plan",
    "combine_metrics",
    "init_distributed",
    "launch_env",
    "shard",
]

_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in the job, as torchrun (or another launcher) describes it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None


def _int_var(env: Mapping[str, str], name: str) -> int:
    text = env[name]
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer") from None


def launch_env(env: Mapping[str, str] | None = None) -> LaunchEnv:
    """The launch environment from RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (default: os.environ).

    None of them set means one process. A multi-process job needs all five (torchrun sets them); anything in
    between is an error that names what is missing, because a half-set-up job would otherwise hang at the first
    collective or, worse, run as several independent single-process jobs writing the same run directory.
    """
    env = os.environ if env is None else env
    present = [v for v in _VARS if env.get(v, "") != ""]
    if not present:
        return LaunchEnv()
    hint = "launch with torchrun (it sets all of RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)"
    for name in ("RANK", "WORLD_SIZE"):
        if name not in present:
            raise ConfigError(
                f"{', '.join(present)} set but {name} is not: half a distributed launch; {hint}"
            )
    rank, world = _int_var(env, "RANK"), _int_var(env, "WORLD_SIZE")
    if world < 1:
        raise ConfigError(f"WORLD_SIZE={world} must be >= 1")
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    if world == 1:
        return LaunchEnv()  # torchrun --nproc_per_node 1: one process, no process group needed
    missing = [v for v in ("LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in present]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set: ranks cannot find each other; {hint}"
        )
    local, port = _int_var(env, "LOCAL_RANK"), _int_var(env, "MASTER_PORT")
    if not 0 <= local <= rank:
        raise ConfigError(f"LOCAL_RANK={local} must be in 0..RANK ({rank})")
    if not 0 < port < 65536:
        raise ConfigError(f"MASTER_PORT={port} is not a TCP port")
    return LaunchEnv(rank, world, local, env["MASTER_ADDR"], port)


def shard(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous share of n items; shares differ by at most one, the first ranks take the extra."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def batch_plan(num_groups: int, mini_batches: int, world_size: int) -> list[list[range]]:
    """Who trains on which of the step's kept groups: ``plan[m][r]`` = indices rank r takes in mini-batch m.

    Mini-batches are the single-process split (contiguous, ``ceil(K / M)`` groups each, empty ones dropped), so an
    optimizer step sees the same groups whatever the number of ranks; each mini-batch is then shared contiguously
    across ranks (shares differ by at most one group; a rank may have none when K < world size).
    """
    if num_groups == 0:
        return []
    n_mini = min(mini_batches, num_groups)
    per = math.ceil(num_groups / n_mini)
    plan = []
    for start in range(0, num_groups, per):
        size = min(per, num_groups - start)
        plan.append(
            [
                range(start + s.start, start + s.stop)
                for s in (shard(size, r, world_size) for r in range(world_size))
            ]
        )
    return plan


# metric-name rules for merging per-rank values: counters add up, wall times take the slowest rank
_SUMMED = {
    "rollout/num_samples",
    "rollout/tokens_generated",
    "rollout/chunks",
    "rollout/peak_active",
    "reward/timeouts",
    "reward/errors",
    "reward/worker_restarts",
}


def combine_metrics(per_rank: Sequence[tuple[Mapping[str, float], float]]) -> dict[str, float]:
    """Merge each rank's (metrics, weight) into one dict.

    Counters (``_SUMMED``) and throughputs (``perf/*per_second``) add up; ``perf/*seconds`` take the maximum (the
    slowest rank sets the pace); everything else is a mean weighted by ``weight`` (e.g. groups scored), which is the
    single-process value when each rank's metric is a mean over its own groups.
    """
    keys = sorted({k for m, _ in per_rank for k in m})
    out = {}
    for k in keys:
        vals = [(float(m[k]), w) for m, w in per_rank if k in m]
        if k in _SUMMED or k.endswith("per_second"):
            out[k] = sum(v for v, _ in vals)
        elif k.startswith("perf/") and k.endswith("seconds"):
            out[k] = max(v for v, _ in vals)
        else:
            total = sum(w for _, w in vals)
            out[k] = sum(v * w for v, w in vals) / total if total > 0 else sum(v for v, _ in vals) / len(vals)
    return out


class Dist:
    """The process group as the trainer sees it. ``Dist()`` is one process: every collective returns its input."""

    def __init__(
        self,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
        object_group: Any = None,
    ) -> None:
        self.rank, self.world_size = rank, world_size
        self.device = device if device is not None else torch.device("cpu")
        self._objects = object_group  # a gloo group for pickled objects (None: the default group)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- tensors
    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Sum (or max, min) of ``tensor`` over ranks, returned as a new tensor on the tensor's device."""
        if not self.enabled:
            return tensor
        import torch.distributed as dist

        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        if op not in ops:
            raise ValueError(f"unknown reduction {op!r}; choose one of {sorted(ops)}")
        out = tensor.detach().clone().to(self.device)
        dist.all_reduce(out, op=ops[op])
        return out.to(tensor.device)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The ``all_reduce`` callable of ``brorl.algo.compute_advantages`` (sums a float64 tensor)."""
        return self.all_reduce(tensor, "sum")

    def all_reduce_gradients(self, params: Iterable[torch.nn.Parameter], bucket_numel: int = 1 << 24) -> None:
        """Sum every parameter's ``.grad`` over ranks, in place.

        Summed, not averaged: each rank's loss is already divided by the global token count (token-mean over the
        whole batch), so the global gradient is the sum of the ranks' gradients. A rank without a gradient for a
        parameter (no groups in this mini-batch) contributes zeros; a parameter no rank has a gradient for keeps
        ``grad = None``, as in one process (AdamW then leaves it alone). Gradients travel in flat buckets of
        ``bucket_numel`` elements: a few large all-reduces, not one per tensor.
        """
        if not self.enabled:
            return
        import torch.distributed as dist

        params = [p for p in params if p.requires_grad]
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.device)
        dist.all_reduce(has)
        params = [p for p, h in zip(params, has.tolist(), strict=True) if h > 0]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.Tensor] = []
        size = 0
        for i, p in enumerate(params):
            bucket.append(p.grad)
            size += p.grad.numel()
            if size >= bucket_numel or i == len(params) - 1:
                flat = torch.cat([g.reshape(-1) for g in bucket])
                dist.all_reduce(flat)
                offset = 0
                for g in bucket:
                    g.copy_(flat[offset : offset + g.numel()].view_as(g))
                    offset += g.numel()
                bucket, size = [], 0

    # -- Python objects (small records; through the gloo object group)
    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._objects)
        return out

    def gather_object(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (None elsewhere)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0, group=self._objects)
        return out

    def exchange(self, outgoing: Sequence[list[Any]]) -> list[Any]:
        """Send ``outgoing[r]`` to rank r, for every r; returns what the other ranks sent here, in rank order.

        One scatter per source rank, so each record crosses the network once, only to the rank that needs it.
        """
        if not self.enabled:
            return list(outgoing[0])
        import torch.distributed as dist

        received: list[Any] = []
        for src in range(self.world_size):
            box: list[Any] = [None]
            send = [list(x) for x in outgoing] if src == self.rank else None
            dist.scatter_object_list(box, send, src=src, group=self._objects)
            received.extend(box[0])
        return received

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier(group=self._objects)

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: cuda:LOCAL_RANK when CUDA is available, else CPU; ``cuda`` without an index also takes LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:K") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name} asked for CUDA but torch sees no GPU; use --device cpu or auto"
            )
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device} does not exist: this node has {torch.cuda.device_count()} GPUs "
                f"(LOCAL_RANK={local_rank}); launch at most that many processes per node"
            )
    return device


def init_distributed(
    device: str = "auto", env: Mapping[str, str] | None = None, timeout_s: float = 1800
) -> Dist:
    """Join the job described by the environment (see ``launch_env``); one process gives a no-op ``Dist``.

    The backend follows the device: NCCL for CUDA, gloo for CPU. Object collectives use a separate gloo group.
    """
    launch = launch_env(env)
    dev = pick_device(device, launch.local_rank)
    if launch.world_size == 1:
        return Dist(device=dev)
    import torch.distributed as dist

    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    timeout = timedelta(seconds=timeout_s)
    host = f"[{launch.master_addr}]" if ":" in (launch.master_addr or "") else launch.master_addr  # IPv6
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            init_method=f"tcp://{host}:{launch.master_port}",
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=timeout,
        )
    objects = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    return Dist(launch.rank, launch.world_size, dev, objects)
