"""Numbers read from metrics and Markdown tables as the report writes them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ropeext.text import markdown_table, number


def test_number_is_a_float_or_none():
    assert number(3) == 3.0 and number("2.5") == 2.5 and number(np.float32(1.5)) == 1.5
    for missing in (None, True, math.nan, "n/a", [1]):
        assert number(missing) is None


def test_markdown_table_formats_floats_and_marks_missing_values():
    df = pd.DataFrame({"variant": ["pi", "yarn"], "method": ["pi", "1e5"], "4096": [1.234, math.nan], "n": [3, 4]})
    rows = [" ".join(line.split()) for line in markdown_table(df.set_index("variant"), ".1f").splitlines()]
    assert rows[0] == "| variant | method | 4096 | n |" and set(rows[1]) <= set("|-:")
    assert rows[2:] == ["| pi | pi | 1.2 | 3 |", "| yarn | 1e5 | – | 4 |"]  # text stays text
