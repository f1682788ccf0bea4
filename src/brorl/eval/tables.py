"""Rendering result tables (lists of row dicts) as CSV and Markdown; JSON is the rows themselves.

A table is ``list[dict[str, Any]]`` whose rows share their keys in order. ``None`` (a metric that is not
defined for the row, such as pass@16 with 8 samples) renders as an empty CSV cell and as ``–`` in Markdown.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    return cols


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_csv(rows: Sequence[dict[str, Any]], digits: int = 6) -> str:
    """CSV text with a header row; floats with ``digits`` decimals, missing values empty."""
    buf = io.StringIO()
    cols = _columns(rows)
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_cell(row.get(c), digits) for c in cols])
    return buf.getvalue()


def to_markdown(rows: Sequence[dict[str, Any]], digits: int = 4, percent: Sequence[str] = ()) -> str:
    """A GitHub Markdown table. Columns named in ``percent`` are shown ×100 with ``digits − 2`` decimals."""
    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c)
            if c in percent and isinstance(v, float) and not math.isnan(v):
                cells.append(f"{100 * v:.{max(digits - 2, 0)}f}")
            else:
                cells.append(_cell(v, digits) or "–")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
