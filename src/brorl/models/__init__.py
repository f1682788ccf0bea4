"""Hugging Face causal LMs and tokenizers: loading them from a directory, the tiny Llama configuration and the
byte-level BPE tokenizer that the default policy is built from (the build itself: ``brorl.default_policy``).

    from brorl.models import load_causal_lm, load_tokenizer
    model, tok = load_causal_lm(path), load_tokenizer(path)
"""

from brorl.models.loading import check_model_dir, load_causal_lm, load_tokenizer
from brorl.models.tiny import count_parameters, tiny_llama_config
from brorl.models.tokenizer import SPECIAL_TOKENS, train_bpe_tokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "check_model_dir",
    "count_parameters",
    "load_causal_lm",
    "load_tokenizer",
    "tiny_llama_config",
    "train_bpe_tokenizer",
]
