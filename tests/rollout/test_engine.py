"""The rollout engine on the tiny Llama fixture: exactness, invariances, stopping rules and bad input."""

from __future__ import annotations

import pytest
import torch

from brorl.rollout import (
    HFRolloutEngine,
    RolloutBackend,
    SamplingParams,
    attention,
    plan_chunks,
    process_logits,
)
from brorl.rollout.attention import suffix_block_size

PROMPTS = ["Q: what is 3+4? A:", "Q: 12*7", "Q: what is 99-1 minus 5? A:"]  # three different lengths
MODES = ["shared", "expand"]


def _recompute(
    model, prompt: torch.Tensor, response: torch.Tensor, temperature: float, top_k: int, top_p: float
):
    """Teacher-forced log-probs of ``response`` after ``prompt``: (processed, raw), each (L,)."""
    with torch.no_grad():
        logits = model(torch.cat([prompt, response])[None]).logits[0, len(prompt) - 1 : -1]
    processed = torch.log_softmax(process_logits(logits, temperature, top_k, top_p), dim=-1)
    raw = torch.log_softmax(logits.float(), dim=-1)
    index = response[:, None]
    return processed.gather(1, index)[:, 0], raw.gather(1, index)[:, 0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.7, 0, 0.9), (1.2, 20, 0.95)])
def test_logprobs_equal_teacher_forced_recompute(tiny_model, tiny_tokenizer, mode, temperature, top_k, top_p):
    engine = HFRolloutEngine(tiny_model, tiny_tokenizer, kv_mode=mode, max_seqs=5)
    params = SamplingParams(max_new_tokens=16, temperature=temperature, top_k=top_k, top_p=top_p, seed=1)
    batch = engine.generate(PROMPTS, 3, params)
    assert batch.response_ids.shape[0] == 9
    for row in range(9):
        length = int(batch.response_mask[row].sum())
        assert length > 0
        prompt = batch.prompt_ids[int(batch.group_index[row])]
        lp, raw = _recompute(tiny_model, prompt, batch.response_ids[row, :length], temperature, top_k, top_p)
        assert torch.allclose(batch.logprobs[row, :length], lp, atol=1e-4)
        assert torch.allclose(batch.raw_logprobs[row, :length], raw, atol=1e-4)
        assert batch.logprobs[row, length:].abs().sum() == 0


@pytest.mark.parametrize("mode", MODES)
def test_greedy_equals_hf_generate(tiny_model, tiny_tokenizer, mode):
    engine = HFRolloutEngine(tiny_model, tiny_tokenizer, kv_mode=mode)
    batch = engine.generate(PROMPTS, 2, SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True))
    for b, prompt in enumerate(batch.prompt_ids):
        ref = tiny_model.generate(
            prompt[None],
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False,
            max_new_tokens=12,
            min_new_tokens=12,
            pad_token_id=tiny_tokenizer.pad_token_id,
        )[0, len(prompt) :]
        for s in range(2):
            assert batch.response_ids[b * 2 + s].tolist() == ref.tolist()
    assert torch.all(batch.logprobs == 0)  # greedy: the sampling distribution is a point mass


def test_samples_do_not_depend_on_chunk_budget_or_kv_mode(tiny_model, tiny_tokenizer):
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.95, seed=7, stop_token_ids=(30, 31))
    budgets = [dict(max_seqs=64), dict(max_seqs=5), dict(max_seqs=2), dict(max_seqs=64, max_tokens=60)]
    runs = [HFRolloutEngine(tiny_model, tiny_tokenizer, **b).generate(PROMPTS, 4, params) for b in budgets]
    expand = HFRolloutEngine(tiny_model, tiny_tokenizer, kv_mode="expand", max_seqs=5)
    runs.append(expand.generate(PROMPTS, 4, params))
    assert [r.stats.chunks for r in runs[:3]] == [1, 3, 6]
    assert runs[3].stats.chunks > 1
    for other in runs[1:]:
        assert torch.equal(other.response_ids, runs[0].response_ids)
        assert torch.equal(other.response_mask, runs[0].response_mask)
        assert torch.allclose(other.logprobs, runs[0].logprobs, atol=1e-5)
        assert other.finish_reason == runs[0].finish_reason
    # The stop tokens made rows end at different times, so rows were dropped from the batch mid-chunk.
    assert len(set(runs[0].response_lengths.tolist())) > 1


def test_prompt_keys_make_samples_independent_of_batch_position(tiny_model, tiny_tokenizer):
    engine = HFRolloutEngine(tiny_model, tiny_tokenizer)
    params = SamplingParams(max_new_tokens=8, seed=3)
    full = engine.generate(PROMPTS, 4, params)
    # A "rank" that holds only the third prompt passes its global index as the key.
    shard = engine.generate(PROMPTS[2:], 4, params, prompt_keys=[2])
    assert torch.equal(shard.response_ids, full.response_ids[8:12])
    other_seed = engine.generate(PROMPTS, 4, SamplingParams(max_new_tokens=8, seed=4))
    assert not torch.equal(other_seed.response_ids, full.response_ids)
    # Different samples of one prompt differ (independent streams per sample index).
    assert len({tuple(r) for r in full.response_ids[:4].tolist()}) > 1


def test_stop_token_ends_rollout_and_is_kept(tiny_model, tiny_tokenizer):
    engine = HFRolloutEngine(tiny_model, tiny_tokenizer)
    greedy = SamplingParams(max_new_tokens=20, temperature=0)
    free = engine.generate(PROMPTS[:1], 1, greedy).response_ids[0].tolist()
    stop = free[5]
    first = free.index(stop)
    batch = engine.generate(
        PROMPTS[:1], 1, SamplingParams(max_new_tokens=20, temperature=0, stop_token_ids=(stop,))
    )
    assert batch.response_ids[0, : first + 1].tolist() == free[: first + 1]
    assert int(batch.response_lengths[0]) == first + 1
    assert batch.finish_reason == ["stop"]
    assert batch.response_ids[0, first + 1 :].eq(tiny_tokenizer.pad_token_id).all()


def test_eos_stops_unless_ignored(tiny_model, tiny_tokenizer):
    engine = HFRolloutEngine(tiny_model, tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    assert eos in engine._stop_token_ids(SamplingParams()).tolist()
    assert eos not in engine._stop_token_ids(SamplingParams(ignore_eos=True)).tolist()
    # Make EOS the greedy choice everywhere by copying the model and boosting EOS's output row.
    import copy

    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.lm_head.weight[eos] *= 0
        model.lm_head.bias = None
        model.model.norm.weight.abs_()
        model.lm_head.weight[eos] += 50 * model.model.norm.weight.sign()
    # Whatever the hidden state, only a few tokens are needed for EOS to appear under sampling at temperature 5.
    batch = HFRolloutEngine(model, tiny_tokenizer).generate(PROMPTS, 2, SamplingParams(max_new_tokens=30))
    for row, reason in enumerate(batch.finish_reason):
        length = int(batch.response_lengths[row])
        ends_on_eos = batch.response_ids[row, length - 1].item() == eos
        assert (reason == "stop") == ends_on_eos
        assert eos not in batch.response_ids[row, : length - 1].tolist()
    assert "stop" in batch.finish_reason
    ignored = HFRolloutEngine(model, tiny_tokenizer).generate(
        PROMPTS, 2, SamplingParams(max_new_tokens=30, ignore_eos=True)
    )
    assert ignored.finish_reason == ["length"] * 6
    assert ignored.response_mask.all()


def test_stop_string_ends_rollout_at_the_completing_token(tiny_model, tiny_tokenizer):
    engine = HFRolloutEngine(tiny_model, tiny_tokenizer)
    free = engine.generate(PROMPTS[1:2], 1, SamplingParams(max_new_tokens=24, temperature=0, ignore_eos=True))
    ids = free.response_ids[0].tolist()
    stop = tiny_tokenizer.decode(ids[6:8])  # a string that first completes around token 8
    assert stop
    params = SamplingParams(
        max_new_tokens=24, temperature=0, ignore_eos=True, stop=(stop, "never-seen-string")
    )
    batch = engine.generate(PROMPTS[1:2], 1, params)
    length = int(batch.response_lengths[0])
    assert batch.finish_reason == ["stop"]
    assert batch.response_ids[0, :length].tolist() == ids[:length]
    assert stop in tiny_tokenizer.decode(ids[:length])  # the stop string is kept in the response
    assert stop not in tiny_tokenizer.decode(
        ids[: length - 1]
    )  # ... and the rollout ended as soon as it appeared
    assert length <= 8


def test_max_new_tokens_bounds_every_response(tiny_model, tiny_tokenizer):
    batch = HFRolloutEngine(tiny_model, tiny_tokenizer).generate(
        PROMPTS, 5, SamplingParams(max_new_tokens=7, ignore_eos=True)
    )
    assert batch.response_ids.shape == (15, 7)
    assert batch.response_mask.all()
    assert batch.finish_reason == ["length"] * 15
    assert batch.group_index.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert batch.response_text == tiny_tokenizer.batch_decode(
        batch.response_ids.tolist(), skip_special_tokens=True
    )
    metrics = batch.stats.metrics()
    assert metrics["rollout/tokens_generated"] == 105
    assert metrics["rollout/num_samples"] == 15
    assert batch.stats.prompt_tokens == sum(len(p) for p in batch.prompt_ids)  # each prompt prefilled once


def test_engine_satisfies_backend_protocol(tiny_model, tiny_tokenizer):
    assert isinstance(HFRolloutEngine(tiny_model, tiny_tokenizer), RolloutBackend)


def test_model_attention_setting_is_restored(tiny_model, tiny_tokenizer):
    before = tiny_model.config._attn_implementation
    HFRolloutEngine(tiny_model, tiny_tokenizer).generate(PROMPTS[:1], 2, SamplingParams(max_new_tokens=3))
    assert tiny_model.config._attn_implementation == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n=0), "rollouts per prompt"),
        (dict(prompts=[]), "non-empty list"),
        (dict(prompts="Q: 1+1"), "non-empty list"),  # a bare string is not a list of prompts
        (dict(prompts=["Q: 1", ""]), "prompt 1 is empty"),
        (dict(prompts=[[1, 2, 10_000]]), "outside the model's vocabulary"),
        (dict(prompts=[[5] * 250]), "exceeds the model's context of 256"),
        (dict(prompt_keys=[0, 1]), "prompt_keys must be 3"),
        (dict(params={"temperature": 1.0}), "must be a SamplingParams"),
    ],
)
def test_bad_generate_input_raises_clear_value_error(tiny_model, tiny_tokenizer, kwargs, message):
    call = dict(prompts=PROMPTS, n=2, params=SamplingParams(max_new_tokens=8))
    call.update(kwargs)
    with pytest.raises(ValueError, match=message):
        HFRolloutEngine(tiny_model, tiny_tokenizer).generate(**call)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(temprature=1.0), "unknown sampling option.*temperature"),
        (dict(temperature=-1.0), "temperature must be"),
        (dict(top_p=0.0), "top_p must be in"),
        (dict(top_k=-2), "top_k must be"),
        (dict(max_new_tokens=0), "max_new_tokens must be"),
        (dict(stop=("",)), "stop strings must be non-empty"),
        (dict(seed=-1), "seed must be"),
    ],
)
def test_bad_sampling_options_raise_clear_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams.from_dict(options)


def test_a_single_stop_string_is_not_split_into_characters():
    assert SamplingParams(stop="###").stop == ("###",)


def test_bad_engine_options_raise(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="unknown kv_mode"):
        HFRolloutEngine(tiny_model, tiny_tokenizer, kv_mode="paged")
    with pytest.raises(ValueError, match="raise max_tokens to at least"):
        HFRolloutEngine(tiny_model, tiny_tokenizer, max_tokens=20).generate(
            PROMPTS, 1, SamplingParams(max_new_tokens=16)
        )


@pytest.mark.parametrize(
    ("lengths", "n", "new", "max_seqs", "max_tokens", "expected"),
    [
        # One prompt, N fits: a single chunk.
        ([10], 4, 5, 8, 1000, [[(0, 0, 4)]]),
        # max_seqs splits one prompt's rollouts across chunks.
        ([10], 5, 5, 2, 1000, [[(0, 0, 2)], [(0, 2, 4)], [(0, 4, 5)]]),
        # Two prompts share a chunk; the prompt is counted once: 10 + 3*5 + 20 + 3*5 = 60 tokens.
        ([10, 20], 3, 5, 8, 60, [[(0, 0, 3), (1, 0, 3)]]),
        # One token short: the second prompt's last rollout moves to the next chunk.
        ([10, 20], 3, 5, 8, 59, [[(0, 0, 3), (1, 0, 2)], [(1, 2, 3)]]),
    ],
)
def test_plan_chunks_respects_budget_and_covers_every_rollout_once(
    lengths, n, new, max_seqs, max_tokens, expected
):
    chunks = plan_chunks(lengths, n, new, max_seqs, max_tokens)
    assert chunks == expected
    for chunk in chunks:
        assert sum(e - s for _, s, e in chunk) <= max_seqs
        assert sum(lengths[b] + (e - s) * new for b, s, e in chunk) <= max_tokens


def test_suffix_block_size():
    assert [suffix_block_size(m) for m in (1, 10, 16, 17, 64, 256, 512, 1024, 4096)] == [
        1,
        10,
        16,
        16,
        16,
        16,
        32,
        64,
        128,
    ]


@pytest.mark.parametrize("block", [3, 16])
def test_many_suffix_blocks_with_compaction_match_recompute_and_budgets(
    tiny_model, tiny_tokenizer, monkeypatch, block
):
    """Responses spanning several suffix blocks, rows dropped mid-block: log-probs still equal a teacher-forced
    recompute and samples do not depend on the chunk budget."""
    monkeypatch.setattr(attention, "suffix_block_size", lambda max_suffix: block)
    params = SamplingParams(max_new_tokens=40, temperature=1.0, seed=5, stop_token_ids=(30, 31, 40, 41))
    runs = [
        HFRolloutEngine(tiny_model, tiny_tokenizer, max_seqs=m).generate(PROMPTS, 4, params) for m in (64, 5)
    ]
    batch = runs[0]
    lengths = batch.response_lengths
    assert len(set(lengths.tolist())) > 2 and int(lengths.max()) > 2 * block  # compaction, several blocks
    assert torch.equal(runs[1].response_ids, batch.response_ids)
    for row in range(batch.response_ids.shape[0]):
        length = int(lengths[row])
        prompt = batch.prompt_ids[int(batch.group_index[row])]
        lp, raw = _recompute(tiny_model, prompt, batch.response_ids[row, :length], 1.0, 0, 1.0)
        assert torch.allclose(batch.logprobs[row, :length], lp, atol=1e-4)
        assert torch.allclose(batch.raw_logprobs[row, :length], raw, atol=1e-4)


def test_bfloat16_model_runs_in_shared_mode(tiny_model, tiny_tokenizer):
    """The merged prefix/suffix softmax keeps its normalisers in float32, so a bf16 model matches its own
    teacher-forced recompute to bf16 precision (padded prompts, several blocks, rows dropped)."""
    import copy

    model = copy.deepcopy(tiny_model).to(torch.bfloat16)
    params = SamplingParams(max_new_tokens=24, temperature=1.0, seed=2, stop_token_ids=(30, 31, 40, 41))
    batch = HFRolloutEngine(model, tiny_tokenizer, kv_mode="shared", max_seqs=5).generate(PROMPTS, 3, params)
    for row in range(batch.response_ids.shape[0]):
        length = int(batch.response_lengths[row])
        prompt = batch.prompt_ids[int(batch.group_index[row])]
        lp, _ = _recompute(model, prompt, batch.response_ids[row, :length], 1.0, 0, 1.0)
        assert torch.allclose(batch.logprobs[row, :length], lp, atol=0.05)
