"""``brorl eval`` end to end on the tiny random model (no downloads), then ``compare`` and ``report`` on its output."""

from __future__ import annotations

import json
import shutil

import pytest

from brorl.cli import main
from brorl.data import split_of
from brorl.eval.io import read_eval_dir

FAST = ["--tasks", "arithmetic-easy", "--instances", "2", "--samples", "4", "--ks", "1", "4"]
FAST += ["--max-new-tokens", "8", "--score-workers", "0"]


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    """A fake run directory: the tiny model as checkpoint step 10, with a metrics.jsonl that logs step 10."""
    run = tmp_path_factory.mktemp("run")
    shutil.copytree(tiny_model_dir, run / "checkpoints" / "step_000010")
    rows = [{"step": s, "samples": 100 * s, "wall_time": 2.0 * s, "reward/mean": 0.1} for s in (5, 10)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", "--model", str(run / "checkpoints" / "step_000010"), *FAST]) == 0
    return run


def test_eval_writes_an_evaluation_directory_next_to_the_checkpoint(run_dir):
    out = run_dir / "eval" / "step_000010"
    assert sorted(p.name for p in out.iterdir()) == [
        "categories.csv",
        "instances.jsonl",
        "results.md",
        "summary.json",
        "tasks.csv",
    ]
    summary, records = read_eval_dir(out)
    assert summary["checkpoint"] == {"step": 10, "samples": 1000, "wall_time": 20.0}  # from metrics.jsonl
    cfg = summary["config"]
    assert (cfg["temperature"], cfg["top_p"]) == (0.6, 0.95)  # the paper's evaluation defaults
    assert [r["name"] for r in summary["tables"]["tasks"]] == ["basic_arithmetic", "chain_sum"]
    assert len(records) == 4 and all(r.samples == 4 and 0 <= r.correct <= 4 for r in records)
    # held-out instances only, and every record carries what the issue asks for
    assert all(r.uid.split("/")[1] == "heldout" for r in records)
    assert all(r.answer is not None and r.category == "arithmetic" for r in records)
    assert set(summary["tables"]["all"]) >= {"pass@1", "pass@4", "instances", "distinct_answers"}
    assert "eval/pass@1/chain_sum" in summary["metrics"]


def test_eval_is_reproducible_and_picks_the_same_heldout_questions(run_dir, tmp_path):
    from brorl.data import get_mixture
    from brorl.eval.runner import heldout_problems

    out = tmp_path / "again"
    assert (
        main(["eval", "--model", str(run_dir / "checkpoints" / "step_000010"), *FAST, "--out", str(out)]) == 0
    )
    (_, first), (_, second) = read_eval_dir(run_dir / "eval" / "step_000010"), read_eval_dir(out)
    assert [r.to_dict() for r in first] == [r.to_dict() for r in second]
    problems = heldout_problems(get_mixture("arithmetic-easy"), 2, seed=0)
    assert all(split_of(p.source, p.question) == "heldout" for p in problems)
    assert [p.uid for p in problems] == [r.uid for r in first]


def test_compare_and_report_read_what_eval_wrote(run_dir, tmp_path, capsys):
    ev = run_dir / "eval" / "step_000010"
    assert main(["compare", str(ev), str(ev), "--base", str(ev), "--out", str(tmp_path / "cmp")]) == 0
    result = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert result["shared_instances"] == 4 and result["t_test"]["mean_diff"] == 0.0
    assert result["shrinkage"]["b"]["shrunk"] == 0
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report" / "task_trajectories.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ks", "1", "32"], "raise --samples"),  # pass@32 from 4 samples is impossible
        (["--tasks", "no_such_task"], "unknown task or mixture"),
    ],
)
def test_eval_rejects_bad_options_with_a_clear_message(tiny_model_dir, tmp_path, capsys, extra, message):
    argv = ["eval", "--model", str(tiny_model_dir), *FAST, "--out", str(tmp_path / "e"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_eval_of_a_plain_model_dir_needs_out(tiny_model_dir, capsys):
    assert main(["eval", "--model", str(tiny_model_dir), *FAST]) == 2
    assert "--out is required" in capsys.readouterr().err
