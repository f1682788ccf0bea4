"""The trainer end to end on the digit task: updates, invariances, dynamic sampling, faults, checkpoints, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from digit_task import digit_config

from brorl.checkpoint import latest_checkpoint
from brorl.trainer import Trainer, good_turing_unseen

TRAINING_KEYS_PREFIXES = ("reward/", "filter/", "adv/", "loss/", "policy/", "rollout/unseen", "eval/")


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_one_step_changes_every_trainable_parameter(digit_run, tmp_path):
    trainer = Trainer(digit_config(digit_run, tmp_path / "run"))
    before = _params(trainer.model)
    metrics = trainer.train_step()
    assert metrics["filter/groups_kept"] == 4 and metrics["adv/max_abs"] > 0
    unchanged = [k for k, v in trainer.model.named_parameters() if torch.equal(v.detach(), before[k])]
    assert unchanged == []
    trainer.close()


def test_micro_batch_budget_does_not_change_the_gradient(digit_run, tmp_path):
    grads = []
    for budget in (1, 3, 100_000):  # 1 and 3 tokens per micro-batch: one or three rows at a time
        trainer = Trainer(digit_config(digit_run, tmp_path / f"b{budget}", micro_batch_tokens=budget))
        trainer.train_step()  # gradients stay in .grad after the optimizer step
        grads.append({k: v.grad.clone() for k, v in trainer.model.named_parameters()})
        trainer.close()
    for other in grads[1:]:
        for k, v in grads[0].items():
            torch.testing.assert_close(other[k], v, atol=1e-7, rtol=1e-4)


def test_rl_raises_the_reward_of_the_digit_task(digit_run, tmp_path):
    trainer = Trainer(digit_config(digit_run, tmp_path / "run", steps=25, dynamic_sampling=False))
    history = trainer.run()
    trainer.close()
    first = sum(m["reward/mean"] for m in history[:5]) / 5
    last = sum(m["reward/mean"] for m in history[-5:]) / 5
    assert last > first + 0.1, (first, last)


def test_dynamic_sampling_keeps_surplus_groups_for_the_next_step(digit_run, tmp_path):
    trainer = Trainer(digit_config(digit_run, tmp_path / "run", prompts_per_step=4, steps=6))
    trainer.pass_rate_ema = 0.01  # refills then ask for 4x the gap, which overflows the batch
    previous_surplus = 0.0
    saw_surplus = False
    for _ in range(6):
        m = trainer.train_step()
        assert m["filter/from_surplus"] == previous_surplus
        # every informative group is either trained on now or kept for later
        informative = m["filter/pass_rate"] * m["filter/groups_generated"]
        assert m["filter/groups_kept"] + m["filter/surplus_kept"] == pytest.approx(
            informative + m["filter/from_surplus"]
        )
        previous_surplus = m["filter/surplus_kept"]
        saw_surplus |= previous_surplus > 0
    trainer.close()
    assert saw_surplus


def test_a_batch_with_no_signal_is_skipped_not_fatal(digit_run, tmp_path):
    bad = tmp_path / "hard.jsonl"
    bad.write_text(
        "".join(
            json.dumps({"question": f"{i}+9=", "answer": "99", "verifier": "exact"}) + "\n" for i in range(10)
        )
    )
    trainer = Trainer(digit_config(digit_run, tmp_path / "run", tasks=str(bad), max_refill_rounds=2))
    m = trainer.train_step()
    trainer.close()
    assert m["loss/skipped_empty_batch"] == 1.0 and m["filter/short_batch"] == 1.0
    assert m["filter/rounds"] == 3 and m["filter/pass_rate"] == 0.0


def test_a_non_finite_loss_skips_the_optimizer_step(digit_run, tmp_path):
    trainer = Trainer(digit_config(digit_run, tmp_path / "run"))
    groups, _ = trainer.collect()
    before = _params(trainer.model)
    adv = torch.full((len(groups) * 16,), float("nan"))
    m = trainer.update(groups, adv)
    assert m["loss/skipped_nonfinite"] == 1
    assert all(torch.equal(v.detach(), before[k]) for k, v in trainer.model.named_parameters())
    m2 = trainer.train_step()  # and training goes on
    assert m2["loss/skipped_nonfinite"] == 0
    trainer.close()


def _training_metrics(path):
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out.append(
            {k: v for k, v in rec.items() if k.startswith(TRAINING_KEYS_PREFIXES) or k in ("step", "samples")}
        )
    return out


def test_resume_reproduces_the_uninterrupted_run(digit_run, tmp_path):
    full = Trainer(digit_config(digit_run, tmp_path / "full", steps=6, checkpoint_every=2))
    full.run()
    full.close()
    part = Trainer(digit_config(digit_run, tmp_path / "part", steps=6, checkpoint_every=2))
    while part.step < 3:  # train 3 steps (checkpoint at 2), then "die" without checkpointing step 3
        m = part.train_step()
        part._log(m)
        if part.step % 2 == 0:
            part.checkpoint()
    part.close()
    resumed = Trainer(
        digit_config(digit_run, tmp_path / "part", steps=6, checkpoint_every=2), resume=tmp_path / "part"
    )
    assert resumed.step == 2
    resumed.run()
    resumed.close()
    a, b = (
        _training_metrics(tmp_path / "full" / "metrics.jsonl"),
        _training_metrics(tmp_path / "part" / "metrics.jsonl"),
    )
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=1e-5, abs=1e-7), (ra["step"], k)


def test_a_crash_while_checkpointing_keeps_the_previous_checkpoint(digit_run, tmp_path, monkeypatch):
    trainer = Trainer(digit_config(digit_run, tmp_path / "run"))
    trainer.train_step()
    first = trainer.checkpoint()
    trainer.train_step()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trainer.model, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        trainer.checkpoint()
    assert latest_checkpoint(tmp_path / "run") == first
    assert (first / "policy" / "model.safetensors").is_file()
    monkeypatch.undo()
    second = trainer.checkpoint()  # the next save works and clears the debris
    assert latest_checkpoint(tmp_path / "run") == second
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))
    trainer.close()


def test_good_turing_unseen_mass():
    assert good_turing_unseen(["a", "a", "b", "c"]) == 0.5  # b and c seen once
    assert good_turing_unseen(["a"] * 4) == 0.0
    assert good_turing_unseen([]) == 0.0
    assert math.isclose(good_turing_unseen(list("abcd")), 1.0)
