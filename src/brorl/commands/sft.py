"""``brorl sft``: supervised fine-tuning of a causal LM on question → answer pairs (library code: ``brorl.sft``).

    brorl sft --model DIR --tasks tiny-default --steps 500 --output runs/sft
    brorl sft --tasks gcd lcm --steps 300 --output runs/scratch     # no --model: a tiny Llama from scratch
    brorl sft --data problems.jsonl --model DIR --output runs/sft-file
    brorl sft --default                                             # rebuild the cached default policy

Values resolve as: SFTConfig defaults < ``--preset`` < flags. ``--default`` uses the ``sft-default`` preset and
writes to the cache (``$BRORL_CACHE_DIR/default-policy``), replacing the previous build only when done.
"""

from __future__ import annotations

import argparse

from brorl.config import ConfigError, add_dataclass_arguments, build, load_preset

HELP = "supervised fine-tuning on reasoning tasks; --default rebuilds the tiny default policy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from brorl.sft import SFTConfig

    parser.add_argument(
        "--preset",
        default=None,
        help="TOML preset (name under brorl/configs or a path); "
        "its [sft] table sets defaults that flags override",
    )
    parser.add_argument(
        "--default",
        action="store_true",
        help="(re)build the cached default policy from the "
        "sft-default preset; other flags override the preset except --model and --output",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_arguments(parser, SFTConfig)


def run(args: argparse.Namespace) -> int:
    from brorl.sft import SFTConfig, run_sft

    if args.default:
        return _run_default(args)
    preset = load_preset(args.preset, section="sft") if args.preset else None
    cfg = build(SFTConfig, preset, args, origin="sft")
    result = run_sft(cfg, quiet=args.quiet)
    _report(result)
    return 0


def _run_default(args: argparse.Namespace) -> int:
    from brorl.default_policy import build_default_policy
    from brorl.sft import SFTConfig

    if args.preset:
        raise ConfigError("--default uses the sft-default preset; drop --preset (or run without --default)")
    for name in ("model", "output"):
        if name in vars(args):
            raise ConfigError(
                f"--default builds a model from scratch into the cache; drop --{name}, or run "
                "without --default to train elsewhere"
            )
    overrides = {k: v for k, v in vars(args).items() if k in SFTConfig.__dataclass_fields__}
    path = build_default_policy(overrides, quiet=args.quiet)
    print(f"default policy written to {path}")
    print((path / "README.md").read_text().split("## Held-out", 1)[-1].split("## Limits", 1)[0].strip())
    return 0


def _report(result: object) -> None:
    scores = result.scores  # type: ignore[attr-defined]
    mean = sum(scores.values()) / max(1, len(scores))
    for task, score in scores.items():
        print(f"  {task:24s} pass@1 {score:6.1%}")
    print(f"mean held-out pass@1 {mean:.1%}; model written to {result.output}")  # type: ignore[attr-defined]
