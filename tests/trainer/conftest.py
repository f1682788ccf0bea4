"""Fixtures of the trainer tests: the digit task (see digit_task.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from digit_task import build_digit_run


@pytest.fixture(scope="session")
def digit_run(tmp_path_factory) -> Path:
    return build_digit_run(tmp_path_factory.mktemp("digit"))
