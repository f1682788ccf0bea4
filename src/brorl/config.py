"""Typed option dataclasses, TOML presets and command-line overrides: one source of truth per setting.

Every command's options are one frozen dataclass. Each field is declared with :func:`option`, whose ``help``
becomes the ``--help`` line. Values are resolved in one order everywhere:

    dataclass default  <  preset file (``--preset NAME`` or a path)  <  command-line flags

Unknown keys in a preset are an error that lists the valid keys, so a typo never silently does nothing.
Checks of invalid *combinations* belong in the dataclass's ``__post_init__``, with a message saying what to change.

Only the CLI, the trainer and small builders read these objects; the maths never sees them (STYLE.md habit 6).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import tomllib

C = TypeVar("C")

PRESET_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message says how."""


def option(
    default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING
) -> Any:
    """Declare a dataclass field with its ``--help`` text."""
    if isinstance(default, (list, dict, set)):  # mutable defaults become factories of copies
        default_factory, default = (lambda d=default: type(d)(d)), dataclasses.MISSING
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _scalar_parser(tp: Any):
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str):
        return tp
    if tp is Path:
        return Path
    raise TypeError(f"unsupported option type {tp!r}")


def _parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--flag`` per field of ``cls``. Defaults are suppressed so overrides can be told apart."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
            )
        )
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        kwargs: dict[str, Any] = {
            "default": argparse.SUPPRESS,
            "dest": f.name,
            "help": f"{help_text} (default: {shown})",
        }
        origin = get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = list(get_args(tp))
            kwargs["type"] = type(get_args(tp)[0])
        elif origin in (list, tuple):
            inner = get_args(tp)[0]
            kwargs["nargs"] = "+"
            kwargs["type"] = _scalar_parser(inner)
            kwargs["metavar"] = f.name.upper().rstrip("S") or "VALUE"
        else:
            kwargs["type"] = _scalar_parser(tp)
        if optional and tp is not bool:
            kwargs["help"] += "; 'none' to unset"
            inner_type = kwargs.get("type", str)
            kwargs["type"] = lambda s, _t=inner_type: None if s.lower() == "none" else _t(s)
        parser.add_argument(flag_name(f.name), **kwargs)


def resolve_preset(name_or_path: str | Path) -> Path:
    """A preset is a TOML file: a path, or a name under ``brorl/configs`` (``tiny-cpu`` → ``tiny-cpu.toml``)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    candidate = PRESET_DIR / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in PRESET_DIR.glob("*.toml")) if PRESET_DIR.exists() else []
    raise ConfigError(
        f"preset {str(name_or_path)!r} not found: give a path to a .toml file or one of {known}"
    )


def load_preset(name_or_path: str | Path, section: str | None = None) -> dict[str, Any]:
    """Read a preset; with ``section`` the keys under ``[section]`` (or the top level if it has none)."""
    path = resolve_preset(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"preset {path} is not valid TOML: {exc}") from exc
    if section is not None and isinstance(data.get(section), dict):
        return dict(data[section])
    return data


def build(cls: type[C], *sources: dict[str, Any] | argparse.Namespace | None, origin: str = "config") -> C:
    """Instantiate ``cls`` from its defaults overlaid with each source in turn (later wins).

    Unknown keys raise :class:`ConfigError` listing the valid ones. Values are coerced to the field's type
    (TOML integers for float fields, lists for list fields).
    """
    hints = typing.get_type_hints(cls)
    valid = {f.name for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    for src in sources:
        if src is None:
            continue
        items = vars(src) if isinstance(src, argparse.Namespace) else src
        for key, val in items.items():
            name = key.replace("-", "_")
            if isinstance(src, argparse.Namespace) and name not in valid:
                continue  # namespaces also carry the subcommand's own non-config arguments
            if name not in valid:
                close = [v for v in sorted(valid) if v.split("_")[0] == name.split("_")[0]]
                hint = f" (did you mean {close}?)" if close else ""
                raise ConfigError(
                    f"unknown {origin} key {key!r}{hint}; valid keys: {', '.join(sorted(valid))}"
                )
            values[name] = _coerce(val, hints[name], key)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def _coerce(val: Any, tp: Any, key: str) -> Any:
    tp, optional = _unwrap_optional(tp)
    if val is None:
        if optional:
            return None
        raise ConfigError(f"{key} may not be empty")
    origin = get_origin(tp)
    try:
        if origin in (list, tuple):
            inner = get_args(tp)[0]
            seq = val if isinstance(val, (list, tuple)) else [val]
            out = [_coerce(v, inner, key) for v in seq]
            return tuple(out) if origin is tuple else out
        if origin is Literal:
            if val not in get_args(tp):
                raise ConfigError(f"{key}={val!r} is not one of {list(get_args(tp))}")
            return val
        if tp is bool:
            return val if isinstance(val, bool) else _parse_bool(val)
        if tp is float and isinstance(val, (int, float)) and not isinstance(val, bool):
            return float(val)
        if tp is int and isinstance(val, int) and not isinstance(val, bool):
            return val
        if tp in (int, float, str, Path):
            return tp(val)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{key}={val!r}: {exc}") from exc
    return val


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/TOML-friendly dict of a config (paths as strings)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)
    return out
