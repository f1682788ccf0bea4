"""Training the default's byte-level BPE tokenizer locally with the ``tokenizers`` library.

The tokenizer is trained on the task mixture's own text (prompts and targets), so a 2,000-token vocabulary covers
the templated questions in few tokens and keeps prompt + answer well under 128 tokens (BRORL.md §9). Digits are
split one per token, because numbers merged into arbitrary chunks (``"12"``, ``"345"``) make arithmetic much harder
to learn for a tiny model.

Encoding adds no special tokens (``<|bos|>`` exists but is never inserted): the rollout engine encodes prompt text
as-is, so SFT does the same and the model sees identical prompt ids in both. The model learns to end its answer
with ``<|eos|>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3 in this order


def train_bpe_tokenizer(
    texts: Iterable[str], *, vocab_size: int = 2000, min_frequency: int = 2, model_max_length: int = 256
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for ``transformers``.

    Args:
        texts: the training text (any iterable of strings; it is consumed once).
        vocab_size: total vocabulary including the 256 byte symbols and the 4 special tokens.
        min_frequency: a merge must occur at least this often.
        model_max_length: recorded in the tokenizer config (the model's context length).

    Returns:
        A ``PreTrainedTokenizerFast`` with pad/bos/eos/unk set; ``save_pretrained`` writes it in HF format.
        Training is deterministic for the same texts in the same order.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least "
            f"{256 + len(SPECIAL_TOKENS)} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)"
        )
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=model_max_length,
        padding_side="left",
    )
