"""Loading any Hugging Face causal LM and its tokenizer from a local directory, with errors a user can act on.

brorl never downloads weights: ``path`` must be a directory written by ``save_pretrained`` (a ``config.json``
next to ``*.safetensors`` or ``pytorch_model.bin``, and the tokenizer files). Hub names are rejected with a message
that says how to get a local copy, because a silent download on a shared CPU machine is never what was meant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_model_dir(path: str | Path, *, need_weights: bool = True) -> Path:
    """Return ``path`` as a ``Path`` if it looks like a saved Hugging Face model, else raise ``ValueError``.

    The message names what is missing and how to fix it (build the default with ``brorl sft --default``, or save a
    model with ``save_pretrained``).
    """
    p = Path(path).expanduser()
    if not p.exists():
        hint = ""
        if "/" in str(path) and not str(path).startswith((".", "/", "~")):
            hint = (
                " It looks like a Hugging Face Hub name: brorl does not download models; save one locally"
                " first (e.g. `huggingface-cli download NAME --local-dir DIR`) and pass DIR."
            )
        raise ValueError(
            f"model directory {str(path)!r} does not exist.{hint} Pass a directory written by "
            "`save_pretrained`, or build the default policy with `brorl sft --default`."
        )
    if not p.is_dir():
        raise ValueError(f"model path {str(path)!r} is a file; pass the directory that holds config.json")
    if not (p / "config.json").exists():
        raise ValueError(
            f"{str(p)!r} has no config.json, so it is not a saved Hugging Face model; pass the directory written "
            "by `model.save_pretrained(DIR)`."
        )
    if need_weights and not any((p / name).exists() for name in WEIGHT_FILES):
        raise ValueError(
            f"{str(p)!r} has a config.json but no weights (expected one of {list(WEIGHT_FILES)}); "
            "the save was probably interrupted, so save the model again."
        )
    return p


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved in ``path`` with ``AutoTokenizer`` (local files only).

    A tokenizer without a pad token gets its eos token as pad, so batches can be padded; one with neither is an
    error, since generation could never stop.
    """
    from transformers import AutoTokenizer

    p = Path(path).expanduser()
    if not p.is_dir():
        check_model_dir(p, need_weights=False)
    try:
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"could not load a tokenizer from {str(p)!r}: {exc}. Save one there with "
            "`tokenizer.save_pretrained(DIR)`."
        ) from exc
    if tok.eos_token_id is None:
        raise ValueError(
            f"the tokenizer in {str(p)!r} has no eos token; set one (tokenizer.eos_token = ...) "
            "and save it again, or generation can never stop"
        )
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str | Path, *, dtype: str = "float32") -> PreTrainedModel:
    """Load the causal LM saved in ``path`` with ``AutoModelForCausalLM`` (local files only), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    p = check_model_dir(path)
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(dtypes)}")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, dtype=dtypes[dtype])
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"could not load a causal LM from {str(p)!r}: {exc}") from exc
    return model.eval()
