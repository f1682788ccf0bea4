"""The locally trained BPE tokenizer and the tiny default architecture."""

from __future__ import annotations

import pytest

from brorl.models import SPECIAL_TOKENS, count_parameters, tiny_llama_config, train_bpe_tokenizer

CORPUS = [f"Calculate {a} + {b}.\n<answer>{a + b}</answer>" for a in range(30) for b in range(0, 30, 3)]


@pytest.fixture(scope="module")
def bpe():
    return train_bpe_tokenizer(CORPUS, vocab_size=320)


def test_tokenizer_round_trips_through_auto_tokenizer(bpe, tmp_path):
    from transformers import AutoTokenizer

    bpe.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Calculate 12 + 7.\n<answer>19</answer>"
    assert loaded(text)["input_ids"] == bpe(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True) == text
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token) == SPECIAL_TOKENS[:3]


def test_encoding_adds_no_special_tokens_like_the_rollout_engine(bpe):
    ids = bpe("Calculate 1 + 2.")["input_ids"]
    assert ids == bpe("Calculate 1 + 2.", add_special_tokens=False)["input_ids"]
    assert not {bpe.bos_token_id, bpe.eos_token_id, bpe.pad_token_id} & set(ids)


def test_digits_are_one_token_each(bpe):
    # "123" must not become a merged chunk even though the corpus is full of numbers
    pieces = [bpe.decode([i]) for i in bpe("123", add_special_tokens=False)["input_ids"]]
    assert pieces == ["1", "2", "3"]


def test_same_corpus_gives_the_same_tokenizer():
    a = train_bpe_tokenizer(CORPUS, vocab_size=300)
    b = train_bpe_tokenizer(CORPUS, vocab_size=300)
    assert a.get_vocab() == b.get_vocab()


def test_too_small_vocabulary_is_rejected():
    with pytest.raises(ValueError, match="at least 260"):
        train_bpe_tokenizer(CORPUS, vocab_size=100)


class _Vocab2000:
    """Stands in for the default's 2,000-token tokenizer (only its size and special ids are read)."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __len__(self) -> int:
        return 2000


def test_default_architecture_has_the_documented_parameter_count():
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_llama_config(_Vocab2000()))
    # 2000·256 + 4·(4·256² + 3·256·688 + 2·256) + 256, tied embeddings counted once (module docstring)
    assert count_parameters(model) == 2000 * 256 + 4 * (4 * 256**2 + 3 * 256 * 688 + 2 * 256) + 256
    assert count_parameters(model) < 10_000_000
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_heads_must_divide_hidden_size():
    with pytest.raises(ValueError, match="divisible"):
        tiny_llama_config(_Vocab2000(), hidden_size=100, num_heads=3)
