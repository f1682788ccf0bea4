"""The prompt computed once per group gives the same log-probs and gradients as forwarding it with every row."""

from __future__ import annotations

import copy

import pytest
import torch

from brorl.trainer.logprobs import group_logprobs, plain_logprobs


def _group(tokenizer, seed, rows=6, t=7):
    g = torch.Generator().manual_seed(seed)
    prompt = torch.tensor(tokenizer("Q: what is 12+7? A:")["input_ids"])
    responses = torch.randint(5, len(tokenizer), (rows, t), generator=g)
    lengths = torch.randint(1, t + 1, (rows,), generator=g)
    mask = torch.arange(t)[None] < lengths[:, None]
    responses[~mask] = tokenizer.pad_token_id
    return prompt, responses, mask


@pytest.mark.parametrize("attention", ["prefix", "cache"])
@pytest.mark.parametrize("temperature", [1.0, 1.3])
def test_prefix_shared_logprobs_equal_plain_ones(tiny_model, tiny_tokenizer, temperature, attention):
    prompt, responses, mask = _group(tiny_tokenizer, 0)
    shared, _ = group_logprobs(
        tiny_model, prompt, responses, mask, temperature=temperature, rows_per_micro=4, attention=attention
    )
    plain = plain_logprobs(tiny_model, prompt, responses, mask, temperature=temperature, rows_per_micro=6)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    assert (shared[~mask] == 0).all() and (shared[mask] < 0).all()


def test_prefix_shared_gradients_equal_plain_ones_for_any_micro_batch(tiny_model, tiny_tokenizer):
    prompt, responses, mask = _group(tiny_tokenizer, 1, rows=5)
    weights = torch.randn(responses.shape, generator=torch.Generator().manual_seed(2))

    def loss_fn(rows, logp, _ent):
        return (logp * weights[rows]).masked_fill(~mask[rows], 0.0).sum()

    grads = []
    runs = [(5, plain_logprobs, {})] + [
        (micro, group_logprobs, {"attention": attention}) for micro in (2, 5, 1) for attention in ("prefix", "cache")
    ]
    for micro, fn, kw in runs:
        model = copy.deepcopy(tiny_model)
        fn(model, prompt, responses, mask, rows_per_micro=micro, loss_fn=loss_fn, **kw)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        assert sum(p.grad is not None for p in model.parameters()) == len(list(model.parameters()))
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], atol=1e-5, rtol=1e-4)


def test_entropy_is_returned_and_bad_shapes_rejected(tiny_model, tiny_tokenizer):
    prompt, responses, mask = _group(tiny_tokenizer, 3)
    _, ent = group_logprobs(tiny_model, prompt, responses, mask, want_entropy=True)
    assert ent.shape == responses.shape and (ent[mask] > 0).all()
    with pytest.raises(ValueError, match=r"\(R, T\)"):
        group_logprobs(tiny_model, prompt, responses, mask[:, :-1])


def test_pack_rows_groups_similar_lengths_within_the_budget():
    from brorl.trainer.logprobs import pack_rows

    lengths = torch.tensor([9, 1, 1, 2, 9, 3, 1])
    batches = pack_rows(lengths, rows_per_micro=2)  # budget 2 × 9 = 18 tokens
    assert sorted(torch.cat(batches).tolist()) == list(range(7))
    for b in batches:
        assert len(b) * int(lengths[b].max()) <= 18
    assert [int(lengths[b].max()) for b in batches] == sorted(int(lengths[b].max()) for b in batches)
    assert len(batches) == 2  # (1, 1, 1, 2, 3) in one micro-batch of 15 tokens, (9, 9) in another


def test_auto_attention_uses_the_prefix_path_and_restores_the_model(tiny_model, tiny_tokenizer, monkeypatch):
    import brorl.trainer.logprobs as lp

    calls = []

    def spy(module, query, *args, **kwargs):
        calls.append(query.shape)
        return lp_prefix(module, query, *args, **kwargs)

    lp_prefix = lp.prefix_attention
    monkeypatch.setattr(lp, "prefix_attention", spy)
    before = tiny_model.config._attn_implementation
    prompt, responses, mask = _group(tiny_tokenizer, 4)
    group_logprobs(tiny_model, prompt, responses, mask, rows_per_micro=3)
    assert calls and all(c[1] == tiny_model.config.num_attention_heads for c in calls)
    assert tiny_model.config._attn_implementation == before


def test_sliding_window_models_fall_back_to_the_cache_path(tiny_tokenizer):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    model = MistralForCausalLM(
        MistralConfig(
            vocab_size=len(tiny_tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            sliding_window=4,  # shorter than prompt + response: the window matters
        )
    )
    prompt, responses, mask = _group(tiny_tokenizer, 5)
    auto, _ = group_logprobs(model, prompt, responses, mask)
    plain = plain_logprobs(model, prompt, responses, mask)
    torch.testing.assert_close(auto, plain, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attention='cache'"):
        group_logprobs(model, prompt, responses, mask, attention="prefix")
    with pytest.raises(ValueError, match="'auto', 'prefix' or 'cache'"):
        group_logprobs(model, prompt, responses, mask, attention="flash")
