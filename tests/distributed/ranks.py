"""Helpers shared by the tests that start real ranks (torchrun or torch.multiprocessing, gloo on 127.0.0.1)."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port nobody listens on right now (for MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_as_rank(rank: int, world: int, port: int):
    """In a spawned worker: set torchrun's variables, one thread, and open the process group. Returns the Dist."""
    import torch

    from brorl.distributed import init_distributed

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    return init_distributed("cpu")
