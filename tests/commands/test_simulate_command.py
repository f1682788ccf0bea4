"""``brorl simulate`` end to end: exit codes and the files a user looks at."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from brorl.cli import main

COLUMNS = [
    "n",
    "seed",
    "step",
    "q_pos",
    "improved_frac",
    "worst_drop",
    "s_r",
    "sampled_correct_term",
    "sampled_wrong_term",
    "unsampled_term",
]


def test_simulate_writes_metrics_summary_and_figure(tmp_path, capsys):
    out = tmp_path / "sim"
    argv = [
        "simulate",
        "--steps",
        "5",
        "--vocab-size",
        "500",
        "--num-correct",
        "40",
        "--rollouts",
        "4",
        "64",
        "--seeds",
        "0",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == COLUMNS
    assert len(rows) == 2 * 2 * 6
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["per_n"]) == {"4", "64"}
    assert set(summary["per_n"]["64"]["q_pos"]) == {"mean", "std", "min", "max"}
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-3
    assert "Q_pos final" in capsys.readouterr().out


def test_theorem_mode_records_measured_and_predicted(tmp_path):
    out = tmp_path / "thm"
    argv = [
        "simulate",
        "--mode",
        "theorem",
        "--lr",
        "1",
        "--steps",
        "3",
        "--vocab-size",
        "300",
        "--num-correct",
        "30",
        "--rollouts",
        "8",
        "--seeds",
        "0",
        "--out",
        str(out),
        "--no-progress",
        "--no-plot",
    ]
    assert main(argv) == 0
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0].keys() >= {"predicted_delta", "measured_delta"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "float64"
    assert not (out / "figure.png").exists()


def test_preset_with_unknown_key_is_a_clear_error(tmp_path, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text("[simulate]\nstep = 3\n")
    assert main(["simulate", "--preset", str(preset), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset key 'step'" in err and "steps" in err


def test_invalid_combination_is_a_clear_error(tmp_path, capsys):
    assert main(["simulate", "--vocab-size", "10", "--num-correct", "10", "--out", str(tmp_path)]) == 2
    assert "--num-correct" in capsys.readouterr().err


def test_unknown_flag_exits_2():
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--no-such-flag"])
    assert exc.value.code == 2


def test_console_script_help_lists_commands():
    done = subprocess.run(
        [sys.executable, "-m", "brorl", "--help"], capture_output=True, text=True, check=True
    )
    assert "simulate" in done.stdout
