"""Two real CPU ranks (torchrun, gloo) train exactly like one process: same parameters, same metrics, same resume.

The digit task with dynamic sampling refills (odd-sized rounds split unevenly across ranks), surplus groups carried
between steps, two mini-batches per step and a KL reference: every path where ranks must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ranks import free_port
from safetensors.torch import load_file

from brorl.cli import main


def _argv(digit: Path, out: Path, *extra: str) -> list[str]:
    flags = {
        "--model": digit / "model",
        "--tasks": digit / "tasks.jsonl",
        "--answer-format": "raw",
        "--template": "plain",
        "--rollouts": 16,
        "--prompts-per-step": 4,
        "--mini-batches": 2,
        "--max-new-tokens": 1,
        "--eval-every": 0,
        "--threads": 1,
        "--lr": 1e-2,
        # Adam divides by sqrt(v) + eps: at the default eps a gradient that cancels to ~1e-9 (embedding rows of
        # tokens the batch barely touches) turns a summation-order difference between 1 and 2 ranks into a
        # visible weight difference. A larger eps keeps that float noise below the tolerance, not real errors.
        "--adam-eps": 1e-5,
        "--base-prompts": 4,
        "--base-rollouts": 16,
        "--kl-coef": 1e-3,
        "--ref-reset-every": 3,
        "--checkpoint-every": 1,
        "--keep-checkpoints": 0,
        "--out": out,
    }
    return [
        "train",
        "--no-progress",
        "--no-tensorboard",
        *(str(x) for kv in flags.items() for x in kv),
        *extra,
    ]


def _torchrun(argv: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "brorl",
        *argv,
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:06d}" / "policy" / "model.safetensors"))


def _metrics(run: Path) -> list[dict]:
    skip = ("perf/", "wall_time", "rollout/chunks", "rollout/peak_active")  # timings; per-engine counters
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in x.items() if not k.startswith(skip)} for x in lines]


def test_two_ranks_match_one_process_step_by_step_and_after_a_resume(digit, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_argv(digit, one, "--steps", "4")) == 0
    _torchrun(_argv(digit, two, "--steps", "2"))
    _torchrun(["train", "--resume", str(two), "--steps", "4", "--no-progress"])
    for step in (1, 2, 3, 4):  # steps 3 and 4 ran after the 2-rank resume
        a, b = _weights(one, step), _weights(two, step)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4, msg=f"step {step}, {k}")
        if step > 1:  # and every step really changed the weights
            assert any(not torch.equal(a[k], _weights(one, step - 1)[k]) for k in a)
    ma, mb = _metrics(one), _metrics(two)
    assert [m["step"] for m in mb] == [1, 2, 3, 4]
    for ra, rb in zip(ma, mb, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), (ra["step"], k)
    # the run exercised refills, surplus and an uneven round (what makes ranks disagree if anything does)
    assert any(m["filter/rounds"] > 1 for m in ma) and any(m["filter/from_surplus"] > 0 for m in ma)
    assert any(m["filter/groups_generated"] % 2 for m in ma)
    # only rank 0 wrote: one metrics line per step, no temporary directories
    assert not list((two / "checkpoints").glob(".tmp-*"))
