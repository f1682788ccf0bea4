"""``brorl reproduce``: the paper's equal-compute comparison in miniature (BRORL.md §6; docs/reproduce.md).

    brorl reproduce --profile quick --out runs/reproduce-quick   # stage 1 → ProRL vs BroRL → report, ~20 min
    brorl reproduce --profile full                               # <= 2 h on 2 cores
    brorl reproduce --profile sweep                              # N in {16, 64, 128, 256, 512, 1024}, <= 2 h

Rerunning the same command resumes: finished stages are skipped, a stopped one continues from its checkpoint.
The pipeline is :func:`brorl.reproduce.reproduce`; profiles are ``configs/reproduce-*.toml``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from brorl.config import ConfigError

HELP = "reproduce the paper in miniature: ProRL to a plateau, then ProRL vs BroRL at equal generated tokens"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default="quick",
        help="quick (~20 min), full (<= 2 h), sweep (N = 16..1024, <= 2 h), or a path to a profile TOML",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory; unset means runs/reproduce-PROFILE"
    )
    parser.add_argument(
        "--model", default=None, help="override the profile's starting policy (a model directory)"
    )
    parser.add_argument("--tasks", default=None, help="override the profile's training tasks")
    parser.add_argument("--unseen", default=None, help="override the held-out unseen tasks ('none' to skip)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write the tables, report and plots from what OUT holds (unfinished arms as partial)",
    )


def run(args: argparse.Namespace) -> int:
    from brorl.config import build
    from brorl.reproduce import ReproduceConfig, load_profile, reproduce

    values, overrides = load_profile(args.profile)
    for key in ("model", "tasks", "unseen", "threads"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    rcfg = build(ReproduceConfig, values, origin=f"profile {args.profile}")
    out = args.out or Path("runs") / f"reproduce-{Path(args.profile).stem.removeprefix('reproduce-')}"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    command = (
        "brorl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else None
    )
    result = reproduce(
        rcfg,
        overrides,
        out,
        command=command or f"brorl reproduce --profile {args.profile} --out {out}",
        train=not args.report_only,
    )
    _print_summary(result, out)
    return 0


def _print_summary(result: dict, out: Path) -> None:
    from brorl.reproduce import markdown_table

    pct = [k for r in result["table1"] for k in r if k.startswith("pass@1")]
    print("\nTable 1 (held-out pass@1 in %)\n" + markdown_table(result["table1"], pct))
    print("Table 2\n" + markdown_table(result["table2"]))
    t = result.get("t_test", {}).get("all")
    if t:
        a, b = result["compared"]
        print(
            f"paired t-test over {t['instances']} instances, {b} vs {a}: Δ = {t['mean_diff']:+.4f}, "
            f"t = {t['t']:.2f}, one-tailed p = {t['p_one_tailed']:.3g}"
            if t["t"] is not None
            else f"paired t-test over {t['instances']} instances: all differences equal"
        )
    print(f"wrote {out}/ (results.json, report.md, *.png)")
