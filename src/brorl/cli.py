"""The ``brorl`` command line: parses arguments, loads presets, seeds, and calls one function per command.

Each subcommand lives in its own module that exposes ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Command modules import heavy libraries (torch, transformers) inside ``run`` so that
``brorl --help`` stays fast. Nothing in the library imports this module.

    brorl --help
    brorl simulate --help
"""

from __future__ import annotations

import argparse
import importlib
import sys

from brorl import __version__
from brorl.config import ConfigError

# command name -> module implementing it (dispatch with a plain dict, STYLE.md habit 7)
COMMANDS: dict[str, str] = {
    "simulate": "brorl.commands.simulate",
    "train": "brorl.commands.train",
    "sft": "brorl.commands.sft",
    "eval": "brorl.commands.eval",
    "compare": "brorl.commands.compare",
    "report": "brorl.commands.report",
    "reproduce": "brorl.commands.reproduce",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brorl",
        description="BroRL: RL with verifiable rewards scaled by broadened exploration (many rollouts per prompt).",
    )
    parser.add_argument("--version", action="version", version=f"brorl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._module.run(args) or 0)
    except ConfigError as exc:
        print(f"brorl {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"brorl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
