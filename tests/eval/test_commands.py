"""``brorl compare`` and ``brorl report`` end to end on evaluation and run directories built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from brorl.cli import main
from brorl.eval import InstanceResult
from brorl.eval.io import find_eval_series, read_eval_dir, read_metrics_jsonl, write_eval_dir

TASKS = ("gcd", "lcm", "word_ladder")


def make_eval(
    path: Path, rates: dict[str, list[int]], step: int | None = None, samples: int | None = None, n: int = 8
) -> Path:
    """An evaluation directory with per-task correct counts (of n samples) for instances
    <task>/heldout/<i>."""
    records = [
        InstanceResult(f"{task}/heldout/{i}", task, "cat_" + task[0], n, c, distinct_answers=1)
        for task, counts in rates.items()
        for i, c in enumerate(counts)
    ]
    write_eval_dir(
        path,
        records,
        ks=(1, 4, 8),
        meta={
            "model": f"model@{step}",
            "checkpoint": {"step": step, "samples": samples, "wall_time": None},
            "config": {"samples": n},
        },
    )
    return path


def test_eval_dir_round_trips_and_tables_are_written(tmp_path):
    d = make_eval(tmp_path / "e", {"gcd": [8, 4, 0], "lcm": [2, 2]})
    summary, records = read_eval_dir(d)
    assert [r.uid for r in records][:2] == ["gcd/heldout/0", "gcd/heldout/1"]
    assert summary["tables"]["all"]["pass@1"] == pytest.approx((1 + 0.5 + 0 + 0.25 + 0.25) / 5)
    assert summary["metrics"]["eval/pass@1/gcd"] == pytest.approx(0.5)
    csv_lines = (d / "tasks.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,instances,samples,pass@1,pass@4,pass@8")
    assert csv_lines[1].startswith("gcd,3,8,0.500000")
    md = (d / "results.md").read_text()
    assert "| gcd | 3 | 8 | 50.00 |" in md  # pass@1 shown in %


def test_read_eval_dir_explains_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match=r"not an evaluation directory.*brorl eval"):
        read_eval_dir(tmp_path)


def test_compare_final_evaluations_matches_scipy_and_writes_files(tmp_path, capsys):
    rng = np.random.default_rng(1)
    a_counts = {t: rng.integers(0, 9, size=20).tolist() for t in TASKS}
    b_counts = {
        t: np.clip(np.array(c) + rng.integers(-1, 3, size=20), 0, 8).tolist() for t, c in a_counts.items()
    }
    a, b = make_eval(tmp_path / "a", a_counts), make_eval(tmp_path / "b", b_counts)
    base = make_eval(tmp_path / "base", {t: [4] * 20 for t in TASKS})
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--base", str(base), "--out", str(out)]) == 0
    result = json.loads((out / "comparison.json").read_text())
    ra = np.concatenate([np.array(a_counts[t]) / 8 for t in TASKS])
    rb = np.concatenate([np.array(b_counts[t]) / 8 for t in TASKS])
    want = stats.ttest_rel(rb, ra, alternative="greater")
    assert result["shared_instances"] == 60
    assert result["t_test"]["t"] == pytest.approx(want.statistic)
    assert result["t_test"]["p_one_tailed"] == pytest.approx(want.pvalue)
    deltas = {r["task"]: r["delta"] for r in result["tasks"]}
    assert deltas["gcd"] == pytest.approx((np.array(b_counts["gcd"]) - a_counts["gcd"]).mean() / 8)
    assert result["shrinkage"]["a"]["shrunk"] == int((ra < 0.5).sum())
    assert "trajectories" not in result  # single checkpoints: no patterns
    assert (out / "comparison.md").read_text().startswith("# Comparison")
    assert "one-tailed p" in capsys.readouterr().out


def test_compare_series_classifies_per_task_patterns_and_plots(tmp_path):
    # base at 0.5 everywhere; A = ProRL-like run, B = BroRL-like run, checkpoints at equal sample counts
    base = make_eval(tmp_path / "base", {t: [4] * 4 for t in TASKS}, step=0, samples=0)
    a_traj = {"gcd": [5, 6], "lcm": [3, 2], "word_ladder": [4, 4]}  # gcd up, lcm degrades, word_ladder flat
    b_traj = {"gcd": [6, 7], "lcm": [5, 6], "word_ladder": [4, 4]}  # gcd ahead, lcm up, word_ladder flat
    for j, step in enumerate((100, 200)):
        make_eval(
            tmp_path / "runA" / "eval" / f"step_{step:06d}",
            {t: [a_traj[t][j]] * 4 for t in TASKS},
            step=step,
            samples=step * 10,
        )
        make_eval(
            tmp_path / "runB" / "eval" / f"step_{step // 4:06d}",
            {t: [b_traj[t][j]] * 4 for t in TASKS},
            step=step // 4,
            samples=step * 10,
        )
    assert [p.name for p in find_eval_series(tmp_path / "runA")] == ["step_000100", "step_000200"]
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                str(tmp_path / "runA"),
                str(tmp_path / "runB"),
                "--base",
                str(base),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads((out / "comparison.json").read_text())
    assert result["trajectories"]["x"] == "samples"  # equal-compute axis, not steps (B has 4× fewer)
    assert result["trajectories"]["a"]["gcd"] == [[0, 1000, 2000], [0.5, 0.625, 0.75]]
    patterns = {r["task"]: r["pattern"] for r in result["patterns"]["tasks"]}
    assert patterns == {
        "gcd": "b_ahead_throughout",
        "lcm": "a_degrades_b_improves",
        "word_ladder": "neither_improves",
    }
    assert (out / "trajectories.png").stat().st_size > 10_000


def test_compare_without_shared_instances_is_a_config_error(tmp_path, capsys):
    a = make_eval(tmp_path / "a", {"gcd": [1, 2]})
    b = make_eval(tmp_path / "b", {"lcm": [1, 2]})
    assert main(["compare", str(a), str(b)]) == 2
    assert "no shared instances" in capsys.readouterr().err


def _synthetic_run(path: Path, steps: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as f:
        for step in range(1, steps + 1):
            row = {
                "step": step,
                "samples": step * 512,
                "wall_time": step * 30.0,
                "reward/mean": float(0.2 + 0.03 * step + rng.normal(0, 0.01)),
                "filter/pass_rate": float(rng.uniform(0.4, 0.6)),
                "rollout/unseen_mass": 1.0 / step,
            }
            if step % 4 == 0:
                row |= {"eval/pass@1": 0.1 * step / 4, "eval/pass@1/gcd": 0.2, "eval/pass@1/lcm": 0.05 * step}
            f.write(json.dumps(row) + "\n")
        f.write('{"step": 13, "samp')  # torn last line: the run is still writing
    return path


def test_report_writes_one_png_per_axis_and_task_trajectories(tmp_path, capsys):
    run = _synthetic_run(tmp_path / "run")
    assert len(read_metrics_jsonl(run)) == 12
    assert main(["report", str(run)]) == 0
    names = sorted(p.name for p in (run / "report").iterdir())
    assert names == [
        "metrics_vs_samples.png",
        "metrics_vs_step.png",
        "metrics_vs_wall_time.png",
        "task_trajectories.png",
    ]
    assert all((run / "report" / n).stat().st_size > 10_000 for n in names)
    assert "metrics_vs_step.png" in capsys.readouterr().out


def test_report_overlays_two_runs_and_rejects_mismatched_labels(tmp_path, capsys):
    a, b = _synthetic_run(tmp_path / "a"), _synthetic_run(tmp_path / "b", seed=1)
    out = tmp_path / "rep"
    assert main(["report", str(a), str(b), "--out", str(out), "--labels", "prorl", "brorl"]) == 0
    assert (out / "metrics_vs_samples.png").exists()
    assert main(["report", str(a), str(b), "--labels", "only_one"]) == 2
    assert "one per run" in capsys.readouterr().err


def test_report_on_a_directory_without_metrics_says_what_it_needs(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "metrics.jsonl not found" in capsys.readouterr().err
