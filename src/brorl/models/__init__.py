"""Hugging Face causal LMs and tokenizers: loading them from a directory, and building and caching the tiny
default policy (BRORL.md §9) that brorl starts RL from when no model is given.

    from brorl.models import default_policy_path, load_causal_lm, load_tokenizer
    path = default_policy_path()            # builds ~/.cache/brorl/default-policy on first use
    model, tok = load_causal_lm(path), load_tokenizer(path)
"""

from brorl.models.default import DEFAULT_POLICY_NAME, build_default_policy, cache_dir, default_policy_path
from brorl.models.loading import check_model_dir, load_causal_lm, load_tokenizer
from brorl.models.tiny import count_parameters, tiny_llama_config
from brorl.models.tokenizer import SPECIAL_TOKENS, train_bpe_tokenizer

__all__ = [
    "DEFAULT_POLICY_NAME",
    "SPECIAL_TOKENS",
    "build_default_policy",
    "cache_dir",
    "check_model_dir",
    "count_parameters",
    "default_policy_path",
    "load_causal_lm",
    "load_tokenizer",
    "tiny_llama_config",
    "train_bpe_tokenizer",
]
