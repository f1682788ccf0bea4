"""Fixtures of the distributed tests: the digit task of tests/trainer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from digit_task import build_digit_run


@pytest.fixture(scope="session")
def digit(tmp_path_factory) -> Path:
    return build_digit_run(tmp_path_factory.mktemp("digit_dist"))
