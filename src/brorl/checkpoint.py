"""The run directory's checkpoints: atomic saves, the last K kept, and finding the newest complete one to resume.

Layout of ``RUN_DIR/checkpoints/step_000123/``:

    policy/             the policy, ``save_pretrained`` (safetensors) + tokenizer: loadable by transformers and vLLM
    reference.safetensors   the KL reference policy's weights (when the run has one)
    trainer_state.pt    optimizer, schedule, RNG states, step, data position, kept surplus groups, ...
    meta.json           {"step": 123, "complete": true, ...}, written last

A checkpoint is written into a hidden temporary directory beside the others and renamed into place only when every
file is on disk (``os.rename`` of a directory is atomic on one filesystem). A crash mid-write leaves a stray
temporary directory, never a half-written checkpoint, and the previous checkpoints stay intact; stray directories
are removed by the next save. ``RUN_DIR/checkpoints/latest`` names the newest complete checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["checkpoint_dirs", "latest_checkpoint", "load_trainer_state", "save_checkpoint"]

_NAME = re.compile(r"^step_(\d{6,})$")


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and (p / "meta.json").is_file():
            try:
                if json.loads((p / "meta.json").read_text()).get("complete"):
                    found.append((int(m.group(1)), p))
            except (OSError, json.JSONDecodeError):
                continue
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    reference_state: dict[str, torch.Tensor] | None = None,
    keep_last: int = 3,
    extra_meta: dict[str, Any] | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and keep the newest ``keep_last`` (0 keeps all). Returns its path.

    ``model_state`` replaces ``model.state_dict()`` for the policy: the full weights of a sharded (FSDP) model,
    gathered beforehand, so the saved policy is the ordinary unsharded one.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stray in root.glob(".tmp-*"):
        shutil.rmtree(stray, ignore_errors=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-step_{step:06d}-{os.getpid()}"
    tmp.mkdir()
    if model_state is None:
        model.save_pretrained(tmp / "policy", safe_serialization=True)
    else:
        model.save_pretrained(tmp / "policy", safe_serialization=True, state_dict=model_state)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / "policy")
    if reference_state is not None:
        from safetensors.torch import save_file

        # clone: tied weights (embeddings = LM head) share memory, which safetensors refuses to write twice
        save_file(
            {k: v.detach().clone().contiguous() for k, v in reference_state.items()},
            str(tmp / "reference.safetensors"),
        )
    torch.save(trainer_state, tmp / "trainer_state.pt")
    meta = {"step": step, "complete": True, "time": time.time()} | (extra_meta or {})
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    _fsync_tree(tmp)
    if final.exists():  # re-saving a step (e.g. after a resume) replaces it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _write_latest(root, final.name)
    if keep_last > 0:
        for old in checkpoint_dirs(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f".latest-{os.getpid()}"
    tmp.write_text(name + "\n")
    os.replace(tmp, root / "latest")


def load_trainer_state(ckpt: str | Path) -> dict[str, Any]:
    """The trainer state of a checkpoint (CPU tensors)."""
    path = Path(ckpt) / "trainer_state.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt} is not a complete brorl checkpoint (no trainer_state.pt)")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_reference_state(ckpt: str | Path) -> dict[str, torch.Tensor] | None:
    path = Path(ckpt) / "reference.safetensors"
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(path))
