"""The cached default policy: a tiny Llama trained from scratch by ``brorl sft`` on the ``tiny-default`` mixture.

This module sits above both ``brorl.models`` and ``brorl.sft`` (building the policy needs the SFT trainer), so
the model layer stays free of training code.

    from brorl.default_policy import default_policy_path
    from brorl.models import load_causal_lm, load_tokenizer
    path = default_policy_path()            # builds ~/.cache/brorl/default-policy on first use
    model, tok = load_causal_lm(path), load_tokenizer(path)

It lives in ``$BRORL_CACHE_DIR/default-policy`` (``~/.cache/brorl/default-policy`` when the variable is unset),
is built on first use by :func:`default_policy_path`, and rebuilt by ``brorl sft --default``. The recipe is the
preset ``brorl/configs/sft-default.toml``. A build trains in a temporary sibling directory that is renamed into
place only when complete, under a file lock, so a crash or a concurrent build never leaves a broken cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_POLICY_NAME", "build_default_policy", "cache_dir", "default_policy_path"]

DEFAULT_POLICY_NAME = "default-policy"
PRESET = "sft-default"
# written last inside a finished build; a directory without it is not a usable cache
MARKER = "brorl_sft.json"


def cache_dir() -> Path:
    """``$BRORL_CACHE_DIR`` if set, else ``~/.cache/brorl``."""
    env = os.environ.get("BRORL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "brorl"


def default_policy_path(build_if_missing: bool = True, *, quiet: bool = True) -> Path:
    """Directory of the default policy, loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer``.

    Builds it first if it is missing (about 10 minutes on two CPU cores); with ``build_if_missing=False`` a
    missing cache raises ``FileNotFoundError`` saying how to build it.
    """
    path = cache_dir() / DEFAULT_POLICY_NAME
    if (path / MARKER).exists():
        return path
    if not build_if_missing:
        raise FileNotFoundError(
            f"the default policy is not built yet ({path}); build it with "
            "`brorl sft --default` (about 10 minutes on 2 CPU cores)"
        )
    with _build_lock(path):
        if (path / MARKER).exists():  # another process built it while we waited for the lock
            return path
        print(
            f"brorl: building the default policy into {path} (once; about 10 minutes on 2 CPU cores)",
            file=sys.stderr,
        )
        return build_default_policy(quiet=quiet, _locked=True)


def build_default_policy(
    overrides: Mapping[str, Any] | None = None, *, quiet: bool = False, _locked: bool = False
) -> Path:
    """(Re)build the default policy from the ``sft-default`` preset (plus ``overrides``) into the cache.

    Returns the cache path. The previous build, if any, stays in place until the new one is complete.
    """
    from brorl import sft
    from brorl.config import build, load_preset

    path = cache_dir() / DEFAULT_POLICY_NAME
    values = {
        **load_preset(PRESET, section="sft"),
        **dict(overrides or {}),
        "output": str(path),
        "overwrite": True,
        "model": None,
    }
    cfg = build(sft.SFTConfig, values, origin="sft-default preset")
    lock = contextlib.nullcontext() if _locked else _build_lock(path)
    with lock:
        sft.run_sft(
            cfg,
            title="brorl default policy (tiny Llama)",
            quiet=quiet,
            summary=(
                "The starting policy brorl uses when no model is given: a tiny Llama-architecture model and a "
                "2,000-token byte-level BPE tokenizer, both trained from scratch on eight easy reasoning-gym tasks "
                "(BRORL.md §9), so that RL has room to improve on a CPU. Rebuild with `brorl sft --default`."
            ),
        )
    return path


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<path>.lock``: one build at a time per cache directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
