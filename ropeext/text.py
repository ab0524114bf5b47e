"""Numbers and tables as the report writes them. Bottom of the package: imports nothing from ropeext."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is heavy; the light paths (CLI help, workflow parse) import this module
    import pandas as pd


def number(value) -> float | None:
    """``value`` as a float; None where it is missing, NaN, a bool or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def markdown_table(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """``df`` as a Markdown table (index first): floats as ``floatfmt``, missing ones as a dash."""
    cells = df.map(lambda v: ("–" if math.isnan(v) else format(v, floatfmt)) if isinstance(v, float) else str(v))
    return cells.to_markdown(disable_numparse=True)


def plural(n, word: str) -> str:
    """'1 window', '3 windows' ('? windows' for a count not recorded)."""
    return f"{n} {word}" + ("" if n == 1 else "s")
