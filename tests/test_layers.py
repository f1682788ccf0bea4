"""Lower layers never import higher ones (STYLE.md): the maths and the rewards know nothing of the trainer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "brorl"

# module -> packages it must never import
FORBIDDEN = {
    "theory": ("brorl.trainer", "brorl.rollout", "brorl.rewards", "brorl.models", "brorl.commands", "brorl.cli"),
    "algo": ("brorl.trainer", "brorl.rollout", "brorl.rewards", "brorl.models", "brorl.config", "brorl.commands",
             "brorl.cli"),
    "rewards": ("brorl.trainer", "brorl.rollout", "brorl.models", "brorl.commands", "brorl.cli"),
    "data": ("brorl.trainer", "brorl.rollout", "brorl.rewards", "brorl.commands", "brorl.cli"),
    "rollout": ("brorl.trainer", "brorl.rewards", "brorl.commands", "brorl.cli"),
    "eval": ("brorl.trainer", "brorl.commands", "brorl.cli"),
    "models": ("brorl.sft", "brorl.default_policy", "brorl.trainer", "brorl.rollout", "brorl.rewards",
               "brorl.commands", "brorl.cli"),
    "trainer": ("brorl.commands", "brorl.cli"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_higher_layers(package):
    bad = []
    for path in sorted((SRC / package).rglob("*.py")):
        for name in _imports(path):
            if name.startswith(FORBIDDEN[package]):
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == []


def test_nothing_imports_the_cli_but_the_entry_point():
    users = [p.relative_to(SRC) for p in SRC.rglob("*.py") if "brorl.cli" in _imports(p)]
    assert [str(p) for p in users] == ["__main__.py"]
