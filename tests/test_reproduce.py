"""``brorl reproduce``: the plateau and equal-budget rules on constructed inputs, and the whole pipeline on the
digit task (tests/trainer/digit_task.py): files, both arms in the tables, skipping finished stages, resuming."""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import pytest

from brorl.checkpoint import checkpoint_dirs
from brorl.cli import main
from brorl.reproduce import budget_reached, plateau_reached, prompts_for

sys.path.insert(0, str(Path(__file__).resolve().parent / "trainer"))
from digit_task import build_digit_run


@pytest.mark.parametrize(
    ("scores", "patience", "min_gain", "expected"),
    [
        ([0.1, 0.2, 0.3], 2, 0.01, (False, 2)),  # still improving
        ([0.1, 0.3, 0.3, 0.3], 2, 0.01, (True, 1)),  # two evaluations without a gain after the best
        ([0.1, 0.3, 0.3, 0.35], 2, 0.01, (False, 3)),  # a gain resets the count
        (
            [0.1, 0.3, 0.305, 0.309],
            2,
            0.01,
            (True, 1),
        ),  # a creep below δ is no gain, and does not move the best
        ([0.1, 0.3, 0.2, 0.31], 2, 0.01, (False, 3)),  # a dip then a gain of exactly δ: not a plateau
        ([0.5, 0.4, 0.45], 2, 0.0, (True, 0)),  # never better than the start
        ([0.5], 1, 0.0, (False, 0)),  # the start alone is no plateau
    ],
)
def test_plateau_stops_after_patience_evaluations_without_a_gain_of_delta(
    scores, patience, min_gain, expected
):
    assert plateau_reached(scores, patience, min_gain) == expected


def _spend(costs, budget):
    """Step through per-step token costs until the budget rule says stop: (steps, tokens spent)."""
    spent = 0.0
    for steps, cost in enumerate(costs, 1):
        spent += cost
        if budget_reached(spent, budget, spent / steps):
            return steps, spent
    raise AssertionError("budget never reached")


def test_equal_budget_stops_each_arm_at_the_step_nearest_the_budget():
    assert _spend([100] * 100, 1000) == (10, 1000)  # small steps land on it
    assert _spend([300] * 100, 1000) == (3, 900)  # 900 is 100 short; 1200 would be 200 over
    assert _spend([400] * 100, 1000) == (2, 800)  # 800 and 1200 miss by 200: a tie stops short
    rng = random.Random(0)
    for _ in range(200):  # noisy steps: the miss stays within about half a step
        mean = rng.uniform(50, 2000)
        costs = [rng.uniform(0.8, 1.2) * mean for _ in range(1000)]
        steps, spent = _spend(costs, 20_000)
        assert abs(spent - 20_000) <= 0.65 * mean, (mean, steps, spent)


def test_arms_get_proportionally_fewer_prompts_at_large_n():
    assert [prompts_for(n, 8, 1024) for n in (16, 64, 128, 256, 512, 1024, 4096)] == [8, 8, 8, 4, 2, 1, 1]


def _write_profile(root: Path, digit: Path, **changes) -> Path:
    rng = random.Random(1)
    with open(root / "unseen.jsonl", "w") as fh:  # a "task not trained on": three terms instead of two
        for i in range(8):
            a, b, c = rng.randint(0, 9), rng.randint(0, 9), rng.randint(0, 9)
            fh.write(
                json.dumps(
                    {
                        "id": i,
                        "question": f"{a}+{b}+{c}=",
                        "answer": str((a + b + c) % 10),
                        "verifier": "exact",
                    }
                )
                + "\n"
            )
    values = {
        "model": str(digit / "model"),
        "tasks": str(digit / "tasks.jsonl"),
        "unseen": str(root / "unseen.jsonl"),
        "stage1_eval_every": 2,
        "stage1_patience": 1,
        "stage1_min_gain": 0.0,
        "stage1_max_steps": 4,
        "rollouts": [16, 64],
        "base_prompts": 4,
        "max_samples_per_step": 128,
        "budget_tokens": 384,
        "checkpoint_fractions": [0.5, 1.0],
        "eval_instances": 8,
        "eval_samples": 4,
        "threads": 1,
    } | changes
    train = {
        "answer_format": "raw",
        "template": "plain",
        "max_new_tokens": 1,
        "lr": 1e-2,
        "base_prompts": 4,
        "base_rollouts": 16,
        "kl_coef": 1e-3,
        "ref_reset_every": 0,
        "tensorboard": False,
    }

    def toml(d):
        return "".join(f"{k} = {json.dumps(v)}\n" for k, v in d.items())

    path = (
        root / f"tiny-{len(list(root.glob('tiny-*.toml')))}.toml"
    )  # a new file: earlier profiles stay intact
    path.write_text("[reproduce]\n" + toml(values) + "[train]\n" + toml(train))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    digit = build_digit_run(root / "digit")
    profile = _write_profile(root, digit)
    out = root / "out"
    assert main(["reproduce", "--profile", str(profile), "--out", str(out)]) == 0
    return root, digit, profile, out


def test_tiny_pipeline_writes_tables_with_both_arms(tiny_run, capsys):
    _, _, _, out = tiny_run
    for name in ("profile.json", "results.json", "report.md", "pass_vs_tokens.png", "task_trajectories.png"):
        assert (out / name).is_file(), name
    for stage in ("stage1", "arms/n0016", "arms/n0064"):
        assert (out / stage / "DONE.json").is_file(), stage
    result = json.loads((out / "results.json").read_text())
    methods = [r["method"] for r in result["table1"]]
    assert methods == ["stage 1: ProRL to plateau", "ProRL N=16", "BroRL N=64"]
    assert [r["N"] for r in result["table2"]] == [16, 64]
    assert {"pass@1 trained", "pass@1 unseen", "pass@1 all"} <= set(result["table1"][1])
    assert all(row["CPU hours"] > 0 for row in result["table1"])
    # equal budget: both arms end within half a step of 384 tokens (a step is >= 64 / >= 128 tokens)
    arms = result["arms"]
    assert abs(arms["16"]["tokens"] - 384) <= 0.5 * arms["16"]["tokens"] / arms["16"]["steps"] + 1
    assert abs(arms["64"]["tokens"] - 384) <= 0.5 * arms["64"]["tokens"] / arms["64"]["steps"] + 1
    assert arms["64"]["lr"] == pytest.approx(arms["16"]["lr"] * (2 * 64 / (4 * 16)) ** 0.5)  # sqrt rule
    assert result["t_test"]["all"]["instances"] == 16  # 8 trained + 8 unseen instances, paired
    assert {r["task"] for r in result["patterns"]} == {"tasks", "unseen"}
    assert set(result["shrinkage"]) == {"ProRL N=16", "BroRL N=64"}
    report = (out / "report.md").read_text()
    assert "Table 1" in report and "BroRL N=64" in report and "Paired t-test" in report


def test_rerun_skips_finished_stages_and_resumes_a_stopped_arm(tiny_run, capsys):
    _, _, profile, out = tiny_run
    before = json.loads((out / "arms/n0064/DONE.json").read_text())
    # stop the BroRL arm "before its end": no marker, newest checkpoint gone
    (out / "arms/n0064/DONE.json").unlink()
    shutil.rmtree(checkpoint_dirs(out / "arms/n0064")[-1])
    capsys.readouterr()
    assert main(["reproduce", "--profile", str(profile), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "stage 1: done" in printed and "arm N=16: done" in printed and "arm N=64: done" not in printed
    after = json.loads((out / "arms/n0064/DONE.json").read_text())
    assert (after["steps"], after["tokens"], after["samples"]) == (
        before["steps"],
        before["tokens"],
        before["samples"],
    )
    assert [e["pass@1"] for e in after["evals"]] == [e["pass@1"] for e in before["evals"]]
    # killed between the final checkpoint and its evaluation: evaluated on rerun, with no extra step
    (out / "arms/n0064/DONE.json").unlink()
    evals = json.loads((out / "arms/n0064/evals.json").read_text())
    (out / "arms/n0064/evals.json").write_text(json.dumps(evals[:-1]))
    assert main(["reproduce", "--profile", str(profile), "--out", str(out)]) == 0
    again = json.loads((out / "arms/n0064/DONE.json").read_text())
    assert (again["steps"], again["tokens"]) == (before["steps"], before["tokens"])
    assert [e["pass@1"] for e in again["evals"]] == [e["pass@1"] for e in before["evals"]]


def test_rerun_with_other_settings_into_the_same_out_is_refused(tiny_run, capsys):
    root, digit, _, out = tiny_run
    other = _write_profile(root, digit, budget_tokens=999)
    assert main(["reproduce", "--profile", str(other), "--out", str(out)]) == 2
    assert "other settings" in capsys.readouterr().err


def test_adding_arms_to_a_finished_run_reuses_stage1_and_the_other_arms(tiny_run, capsys):
    root, digit, _, out = tiny_run
    wider = _write_profile(root, digit, rollouts=[16, 32, 64])
    capsys.readouterr()
    assert main(["reproduce", "--profile", str(wider), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "stage 1: done" in printed and "arm N=16: done" in printed and "arm N=64: done" in printed
    result = json.loads((out / "results.json").read_text())
    assert [r["N"] for r in result["table2"]] == [16, 32, 64]
    assert result["compared"] == ["ProRL N=16", "BroRL N=64"]  # the largest N is compared when 512 is absent


def test_report_only_trains_nothing_and_labels_unfinished_arms_partial(tiny_run, tmp_path):
    _, _, profile, out = tiny_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "arms/n0064/DONE.json").unlink()  # as if the arm were still running
    steps_before = len((copy / "arms/n0064/metrics.jsonl").read_text().splitlines())
    assert main(["reproduce", "--profile", str(profile), "--out", str(copy), "--report-only"]) == 0
    assert not (copy / "arms/n0064/DONE.json").exists()
    assert len((copy / "arms/n0064/metrics.jsonl").read_text().splitlines()) == steps_before
    result = json.loads((copy / "results.json").read_text())
    assert "BroRL N=64 (partial)" in [r["method"] for r in result["table1"]]
    assert [r["N"] for r in result["table2"]] == [16]  # Table 2 only from finished arms
