"""``brorl sft``: the schedule, batching and masking pieces, a short run that learns, saving, and bad input."""

from __future__ import annotations

import copy
import json
import math

import pytest

import brorl.sft
from brorl.config import ConfigError
from brorl.sft import (
    IGNORE_INDEX,
    Encoded,
    Example,
    SFTConfig,
    batch_order,
    collate,
    encode_examples,
    lr_factor,
    run_sft,
    sample_completions,
    train,
)


@pytest.mark.parametrize(
    ("step", "total", "warmup", "schedule", "expected"),
    [
        (0, 100, 10, "cosine", 0.1),  # first warm-up step: 1/10, not 0
        (9, 100, 10, "cosine", 1.0),  # last warm-up step reaches the peak
        (10, 100, 10, "cosine", 1.0),  # cosine starts at the peak
        (99, 100, 10, "cosine", 0.1),  # ... and ends at min_ratio on the last step
        (10 + 89 // 2, 100, 10, "cosine", 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 44 / 89))),  # midpoint
        (50, 100, 10, "constant", 1.0),
        (0, 5, 0, "constant", 1.0),  # no warm-up
    ],
)
def test_lr_factor_warms_up_then_follows_the_schedule(step, total, warmup, schedule, expected):
    assert lr_factor(step, total, warmup, schedule, 0.1) == pytest.approx(expected)


def test_lr_factor_rejects_unknown_schedule():
    with pytest.raises(ValueError, match="cosine"):
        lr_factor(20, 100, 10, "linear", 0.1)


def test_batch_order_visits_every_example_once_per_epoch_and_is_seeded():
    batches = batch_order(10, steps=5, batch_size=4, seed=3)  # 20 draws = 2 epochs of 10
    flat = [i for b in batches for i in b]
    assert all(len(b) == 4 for b in batches)
    assert sorted(flat[:10]) == list(range(10))  # first epoch is a permutation
    assert batch_order(10, 5, 4, seed=3) == batches
    assert batch_order(10, 5, 4, seed=4) != batches


def test_encoding_masks_the_prompt_appends_eos_and_drops_long_examples(tiny_tokenizer):
    examples = [Example("Q: what is 1+2? A:", " 3", "t"), Example("Q: " + "9" * 300, " 1", "t")]
    kept, dropped = encode_examples(examples, tiny_tokenizer, max_length=64)
    assert dropped == 1 and len(kept) == 1
    enc = kept[0]
    n_prompt = len(tiny_tokenizer("Q: what is 1+2? A:")["input_ids"])
    assert enc.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
    assert enc.input_ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(enc.input_ids[n_prompt:-1]) == " 3"


def test_collate_right_pads_and_ignores_padding_in_the_loss():
    batch = collate([Encoded([5, 6, 7], [-100, 6, 7]), Encoded([5], [-100])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]


def _sums(n: int) -> list[Example]:
    return [Example(f"Q: what is {a}+{b}? A:", f" {a + b}", "sum") for a in range(n) for b in range(n)]


def test_short_training_lowers_the_target_loss_and_the_model_still_generates(tiny_model, tiny_tokenizer):
    model = copy.deepcopy(tiny_model)
    data, _ = encode_examples(_sums(8), tiny_tokenizer, max_length=64)
    result = train(
        model,
        data,
        pad_id=tiny_tokenizer.pad_token_id,
        steps=60,
        batch_size=16,
        lr=3e-3,
        warmup_steps=5,
        seed=0,
    )
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    texts = sample_completions(model, tiny_tokenizer, ["Q: what is 2+3? A:"] * 4, max_new_tokens=4, seed=0)
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)
    assert any(t.strip() for t in texts)


def test_sampling_is_seeded(tiny_model, tiny_tokenizer):
    prompts = ["Q: what is 2+3? A:"] * 3
    a = sample_completions(tiny_model, tiny_tokenizer, prompts, max_new_tokens=6, seed=1)
    assert a == sample_completions(tiny_model, tiny_tokenizer, prompts, max_new_tokens=6, seed=1)


def _tiny_cfg(tmp_path, **kw) -> SFTConfig:
    values = dict(
        tasks=["gcd", "lcm"],
        train_size=400,
        eval_size=4,
        eval_samples=2,
        eval_every=20,
        steps=30,
        batch_size=16,
        lr=3e-3,
        warmup_steps=5,
        vocab_size=300,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        max_new_tokens=8,
        output=str(tmp_path / "out"),
    )
    values.update(kw)
    return SFTConfig(**values)


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory):
    return run_sft(_tiny_cfg(tmp_path_factory.mktemp("sft")), quiet=True)


def test_scratch_run_saves_a_model_the_auto_classes_load_and_generate_from(scratch_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = scratch_run.output
    assert (out / "model.safetensors").exists()
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    enc = tok(["Find the Greatest Common Divisor (GCD) of these numbers: 4, 6."], return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > enc["input_ids"].shape[1]
    assert scratch_run.train.losses[-1] < scratch_run.train.losses[0]


def test_scratch_run_writes_model_card_metrics_and_scores_per_task(scratch_run):
    out = scratch_run.output
    card = (out / "README.md").read_text()
    assert set(scratch_run.scores) == {"gcd", "lcm"}
    for task, score in scratch_run.scores.items():
        assert 0.0 <= score <= 1.0
        assert f"| {task} | {score:.1%} |" in card
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("sft/loss" in r for r in rows)
    assert sum("eval/pass@1_macro" in r for r in rows) == 2  # step 20 and the final evaluation
    info = json.loads((out / "brorl_sft.json").read_text())
    assert info["prompt"]["answer_format"] == "answer_tag"
    assert info["prompt"]["format"] == "{question}\nPut your final answer inside <answer></answer>.\n"


def test_same_seed_gives_bit_identical_weights(tmp_path, scratch_run):
    from safetensors.torch import load_file

    again = run_sft(_tiny_cfg(tmp_path), quiet=True)
    a, b = load_file(scratch_run.output / "model.safetensors"), load_file(again.output / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert again.scores == scratch_run.scores


def test_cli_fine_tunes_an_existing_model_dir(tiny_model_dir, tmp_path):
    from brorl.cli import main

    out = tmp_path / "ft"
    flags = (
        "--tasks gcd --steps 3 --train-size 50 --eval-size 2 --eval-samples 1 --eval-every 0 --batch-size 4"
    )
    flags += " --max-new-tokens 4 --max-length 256 --quiet"
    code = main(["sft", "--model", str(tiny_model_dir), "--output", str(out), *flags.split()])
    assert code == 0
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert "fine-tuned from" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model", "/no/such/dir"], "does not exist"),
        (["--tasks", "not_a_task"], "unknown task or mixture 'not_a_task'"),
        (["--steps", "0"], "steps=0"),
        (["--data", "/no/such/file.jsonl"], "does not exist"),
        (["--answer-format", "xml"], "answer_format"),
        (["--max-length", "8"], "raise --max-length"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message_that_says_what_to_fix(tmp_path, capsys, argv, needle):
    from brorl.cli import main

    code = main(["sft", "--output", str(tmp_path / "o"), "--quiet", "--train-size", "10", *argv])
    assert code == 2
    assert needle in capsys.readouterr().err


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(ConfigError, match="--overwrite"):
        run_sft(_tiny_cfg(tmp_path), quiet=True)


def test_default_flag_rejects_model_and_output(capsys):
    from brorl.cli import main

    assert main(["sft", "--default", "--model", "x"]) == 2
    assert "--default builds a model from scratch" in capsys.readouterr().err


def test_file_source_trains_on_worked_solutions_and_holds_out_a_fifth(tmp_path):
    rows = [
        {"question": f"What is {a} plus {b}?", "answer": str(a + b), "solution": f"{a} + {b} = {a + b}"}
        for a in range(10)
        for b in range(5)
    ]
    src = tmp_path / "sums.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _tiny_cfg(tmp_path, data=str(src), tasks=[], eval_size=5, steps=5, eval_every=0)
    train_set, heldout = brorl.sft.load_sft_problems(cfg)
    assert len(heldout) == 5 and len(train_set) == 45
    assert not {p.uid for p in heldout} & {p.uid for p in train_set}
    examples = brorl.sft.make_examples(train_set, None, target="auto", answer_format="answer_tag")
    assert examples[0].target.endswith("</answer>") and " + " in examples[0].target
    result = run_sft(cfg, quiet=True)
    assert set(result.scores) == {"sums"}
