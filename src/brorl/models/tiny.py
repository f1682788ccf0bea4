"""The tiny default architecture: a Llama-style decoder small enough to train and sample on two CPU cores.

BRORL.md §9: a ~3.7M-parameter Llama with a 2,000-token BPE reaches useful pass@1 on easy reasoning-gym tasks in
minutes. With vocabulary 2,000, hidden 256, 4 layers, 4 heads and an MLP of 688, the count is
2000·256 (tied embeddings) + 4·(4·256² + 3·256·688 + 2·256) + 256 = 3.70M parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import LlamaConfig, PreTrainedTokenizerBase


def tiny_llama_config(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 688,
    max_positions: int = 256,
) -> LlamaConfig:
    """A ``LlamaConfig`` sized to ``tokenizer`` (vocabulary and special-token ids), with tied embeddings."""
    from transformers import LlamaConfig

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct trainable parameters (tied embeddings counted once)."""
    seen = {id(p): p.numel() for p in model.parameters() if p.requires_grad}
    return sum(seen.values())
