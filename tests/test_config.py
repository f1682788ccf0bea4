"""Option dataclasses, presets and overrides (brorl.config)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from brorl.config import ConfigError, add_dataclass_arguments, build, load_preset, option, to_dict


@dataclass(frozen=True)
class Opts:
    lr: float = option(1e-3, help="learning rate")
    steps: int = option(10, help="steps")
    sizes: list[int] = option([1, 2], help="sizes")
    mode: Literal["a", "b"] = option("a", help="mode")
    flag: bool = option(True, help="a switch")
    out: Path = option(Path("runs"), help="where")
    limit: int | None = option(None, help="optional limit")


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Opts)
    return parser.parse_args(argv)


def test_defaults_then_preset_then_flags():
    cfg = build(Opts, {"lr": 1, "steps": 5, "sizes": [3]}, _parse(["--steps", "7", "--no-flag"]))
    assert cfg == Opts(lr=1.0, steps=7, sizes=[3], mode="a", flag=False, out=Path("runs"), limit=None)
    assert isinstance(cfg.lr, float)


def test_flags_of_every_kind_parse():
    cfg = build(Opts, _parse(["--sizes", "4", "5", "--mode", "b", "--out", "x", "--limit", "3"]))
    assert (cfg.sizes, cfg.mode, cfg.out, cfg.limit) == ([4, 5], "b", Path("x"), 3)
    assert build(Opts, _parse(["--limit", "none"])).limit is None
    assert to_dict(cfg)["out"] == "x"


def test_mutable_defaults_are_not_shared():
    a, b = Opts(), Opts()
    a.sizes.append(9)
    assert b.sizes == [1, 2]


def test_unknown_preset_key_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown preset key 'stpes'.*valid keys: flag, limit, lr"):
        build(Opts, {"stpes": 3}, origin="preset")


def test_wrong_types_and_choices_are_config_errors():
    with pytest.raises(ConfigError, match="mode"):
        build(Opts, {"mode": "c"})
    with pytest.raises(ConfigError, match="steps"):
        build(Opts, {"steps": "many"})


def test_presets_load_from_files_and_bad_names_say_what_exists(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[simulate]\nsteps = 3\n")
    assert load_preset(path, section="simulate") == {"steps": 3}
    with pytest.raises(ConfigError, match="not found"):
        load_preset("no-such-preset")
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_preset(bad)
