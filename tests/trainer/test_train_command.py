"""``brorl train`` from the command line: config errors, the files of a run, and resuming after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brorl.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from conftest import build_digit_run


@pytest.fixture(scope="module")
def digit(tmp_path_factory):
    return build_digit_run(tmp_path_factory.mktemp("digit_cli"))


def _argv(digit, out, *extra):
    return [
        "train",
        "--model",
        str(digit / "model"),
        "--tasks",
        str(digit / "tasks.jsonl"),
        "--answer-format",
        "raw",
        "--template",
        "plain",
        "--rollouts",
        "16",
        "--prompts-per-step",
        "4",
        "--max-new-tokens",
        "1",
        "--eval-every",
        "0",
        "--no-progress",
        "--threads",
        "1",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--rollouts", "1"], "--rollouts 1 cannot work with the group estimator"),
        (["--prompts-per-step", "3", "--mini-batches", "2"], "divisible by --mini-batches"),
        (["--top-p", "0.9", "--old-logprobs", "rollout"], "--old-logprobs recompute"),
        (["--lr", "-1"], "--lr must be positive"),
    ],
)
def test_invalid_combinations_exit_2_with_a_reason(digit, tmp_path, capsys, flags, fragment):
    assert main(_argv(digit, tmp_path / "run", *flags)) == 2
    assert fragment in capsys.readouterr().err


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_unknown_preset_key_lists_valid_ones(tmp_path, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text("[train]\nrolouts = 4\n")
    assert main(["train", "--preset", str(preset), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset key 'rolouts'" in err and "rollouts" in err


def test_unknown_flag_exits_2(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--rolouts", "4"])
    assert exc.value.code == 2


def test_train_writes_metrics_tensorboard_and_a_loadable_checkpoint(digit, tmp_path):
    out = tmp_path / "run"
    assert main(_argv(digit, out, "--steps", "2")) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    for key in (
        "reward/mean",
        "filter/pass_rate",
        "rollout/unseen_mass",
        "adv/max_abs",
        "loss/policy",
        "policy/grad_norm",
        "perf/samples_per_second",
    ):
        assert key in lines[-1], key
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = out / "checkpoints" / "step_000002" / "policy"
    AutoModelForCausalLM.from_pretrained(policy)
    AutoTokenizer.from_pretrained(policy)
    # a second run into the same directory must not silently overwrite it
    assert main(_argv(digit, out, "--steps", "2")) == 2


def _training_lines(path: Path):
    keep = ("reward/", "filter/", "adv/", "loss/", "policy/", "rollout/unseen")
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out.append({k: v for k, v in rec.items() if k == "step" or k.startswith(keep)})
    return out


def test_a_run_killed_with_sigkill_resumes_and_matches_an_uninterrupted_run(digit, tmp_path):
    steps = ["--steps", "30", "--checkpoint-every", "2"]
    assert main(_argv(digit, tmp_path / "full", *steps)) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "brorl", *_argv(digit, out, *steps)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "step_000004").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run, possibly mid-step or mid-checkpoint
    proc.wait()
    done = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert done and done[-1] < "step_000030", done  # it really died mid-run
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    full, resumed = (
        _training_lines(tmp_path / "full" / "metrics.jsonl"),
        _training_lines(out / "metrics.jsonl"),
    )
    assert [r["step"] for r in resumed] == list(range(1, 31))
    for a, b in zip(full, resumed, strict=True):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), (a["step"], k)
