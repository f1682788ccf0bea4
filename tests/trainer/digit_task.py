"""A task a random tiny model solves sometimes, so RL has a signal from step one, with no downloads.

``digit_run`` gives a directory holding a character-level tokenizer (digits, a few symbols, specials), a tiny
random Llama model over it, and ``tasks.jsonl``: questions "a+b=" whose answer is the last digit of a+b, checked
by exact match on the raw one-token response. A random policy answers right about 1 time in 13, so groups of 16
rollouts are mostly mixed and dynamic sampling keeps them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ALPHABET = list("0123456789+=? ")


def build_digit_run(root: Path, *, seed: int = 0, problems: int = 40) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + ALPHABET)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,  # as many small models do: checkpoints and resume must cope with tied weights
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    rng = random.Random(seed)
    with open(root / "tasks.jsonl", "w") as fh:
        for i in range(problems):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            row = {"id": i, "question": f"{a}+{b}=", "answer": str((a + b) % 10), "verifier": "exact"}
            fh.write(json.dumps(row) + "\n")
    return root


def digit_config(root: Path, out: Path, **overrides):
    """A TrainConfig for the digit task: 1-token raw answers, N = 16, tiny budgets, no evaluation."""
    from brorl.trainer import TrainConfig

    values = dict(
        model=str(root / "model"),
        tasks=str(root / "tasks.jsonl"),
        answer_format="raw",
        template="plain",
        rollouts=16,
        prompts_per_step=4,
        max_new_tokens=1,
        steps=3,
        eval_every=0,
        checkpoint_every=100,
        lr=1e-2,
        base_prompts=4,
        base_rollouts=16,
        kl_coef=1e-3,
        ref_reset_every=0,
        progress=False,
        tensorboard=False,
        out=out,
        threads=1,
    )
    values.update(overrides)
    return TrainConfig(**values)
