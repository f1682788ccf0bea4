"""Shared test fixtures: a tiny Llama-architecture model and a locally trained tokenizer, with no downloads.

Fixtures (all session-scoped, so they are built once per test run; treat them as read-only):

- ``tiny_tokenizer``: a byte-level BPE tokenizer (vocabulary ~384) trained in memory with the ``tokenizers``
  library on a few hundred generated arithmetic strings, wrapped as ``PreTrainedTokenizerFast`` with
  ``<pad>`` / ``<eos>`` / ``<bos>`` / ``<unk>`` special tokens. It adds no special tokens when encoding.
- ``tiny_model``: ``LlamaForCausalLM`` (hidden 64, 2 layers, 4 heads of which 2 key/value heads, so grouped-query
  attention is exercised), vocabulary sized to the tokenizer, random weights from ``torch.manual_seed(0)``,
  float32, eval mode, context 256 tokens.
- ``tiny_model_dir``: both saved with ``save_pretrained`` in a temporary directory; returns its ``Path``
  (loadable with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``).

If a test needs to modify the model (train it, change its config), deep-copy it first.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

TINY_CONTEXT = 256


def _arithmetic_corpus(n: int, seed: int) -> list[str]:
    """Strings such as ``"Q: 12+7=? A: 19"``: digits, operators and a few words for the BPE merges."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice("+-*")
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        lines.append(f"Q: what is {a}{op}{b}? A: {value}\n")
    return lines


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_arithmetic_corpus(500, seed=0), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=TINY_CONTEXT,
        pad_token_id=tiny_tokenizer.pad_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
        bos_token_id=tiny_tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tiny_tokenizer, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_model")
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path
