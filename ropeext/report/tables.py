"""Pieces every report section shares: variant names, metrics files, row order, markdown tables, styles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is heavy; the light paths (CLI help, workflow parse) import this module
    import pandas as pd

from ropeext.io import read_json
from ropeext.report.intervals import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, Interval


def parse_variant(name: str) -> dict:
    """'tiny-dprope-1024-anchor' -> model, method, target, layout."""
    parts = name.split("-")
    if len(parts) < 4:
        return {"model": name, "method": "", "target": "", "layout": ""}
    return {"model": parts[0], "method": "-".join(parts[1:-2]), "target": parts[-2], "layout": parts[-1]}


def load_json(paths: list[str | Path]) -> list[dict]:
    out = []
    for p in paths:
        p = Path(p)
        m = read_json(p, "results file")
        if not m.get("variant"):
            m["variant"] = p.parent.name
        out.append(m)
    return out


def order_rows(df: pd.DataFrame) -> pd.DataFrame:
    """noft rows first, then by method and layout, so before/after fine-tuning read top to bottom."""
    keys = [
        (parse_variant(v)["layout"] != "noft", parse_variant(v)["method"], parse_variant(v)["layout"]) for v in df.index
    ]
    return df.iloc[sorted(range(len(df)), key=lambda i: keys[i])]


def variant_styles(variants: list[str]) -> dict[str, dict]:
    """One colour per method, one line style per layout (dashed: no fine-tuning)."""
    import matplotlib  # heavy, and only the figures need it

    methods = sorted({parse_variant(v)["method"] for v in variants})
    layouts = sorted({parse_variant(v)["layout"] for v in variants} - {"noft"})
    colours = matplotlib.colormaps["tab10"]
    dashes = {"noft": "--"} | {lay: ls for lay, ls in zip(layouts, ["-", ":", "-.", (0, (5, 1)), (0, (1, 3))])}
    markers = {"noft": "x"} | {lay: m for lay, m in zip(layouts, ["o", "s", "^", "D", "v"])}
    return {
        v: {
            "color": colours(methods.index(parse_variant(v)["method"]) % 10),
            "linestyle": dashes.get(parse_variant(v)["layout"], "-"),
            "marker": markers.get(parse_variant(v)["layout"], "o"),
        }
        for v in variants
    }


def section(title: str, body: list[str]) -> list[str]:
    return [f"## {title}", ""] + body + [""]


# ----------------------------------------------------------------------------- cells with their evidence
# A report table's CSV keeps its plain values (what other code reads by column); beside it, <name>-intervals.csv
# holds one row per sampled cell: variant, column, value, lo, hi (95%), n, unit and method. The markdown table
# shows each such cell as "value [lo, hi]" and states n (and the method) once under the table.
def with_intervals(df: pd.DataFrame, cells: dict[str, dict], floatfmt: str = ".2f") -> pd.DataFrame:
    """``df`` with each cell that has an interval written as 'value [lo, hi]' (others as they are)."""
    out = df.astype(object).copy()
    for v, by_col in cells.items():
        for col, iv in by_col.items():
            if v in out.index and col in out.columns and iv is not None and iv.known:
                out.loc[v, col] = iv.text(floatfmt)
    return out


def intervals_frame(cells: dict[str, dict]) -> pd.DataFrame:
    """The long-format companion of a report table: one row per variant and sampled column."""
    import pandas as pd  # heavy: only when a report is written

    rows = [
        {
            "variant": v,
            "column": str(col),
            "value": iv.value,
            "lo": iv.lo,
            "hi": iv.hi,
            "n": iv.n,
            "unit": iv.unit,
            "method": iv.method or "none",
        }
        for v, by_col in cells.items()
        for col, iv in by_col.items()
        if iv is not None
    ]
    return pd.DataFrame(rows, columns=["variant", "column", "value", "lo", "hi", "n", "unit", "method"])


def method_words(iv: Interval) -> str:
    if iv.method == "wilson":
        return "Wilson score interval"
    if iv.method == "bootstrap":
        return f"percentile bootstrap over {iv.unit}, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}"
    return ""


def evidence_line(cells: dict[str, dict], csv: str) -> str:
    """What stands behind the table's cells, once: n per cell, the interval's method, where the rest is."""
    ivs = [iv for by_col in cells.values() for iv in by_col.values() if iv is not None and iv.value is not None]
    if not ivs:
        return ""
    unit = ivs[0].unit or "samples"
    ns = sorted({iv.n for iv in ivs if iv.n})
    count = "n unknown" if not ns else f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}"
    if ns == [1]:
        unit = unit.removesuffix("s")  # "1 sequence", "1 prompt"
    methods = sorted({method_words(iv) for iv in ivs if iv.known})
    missing = sum(not iv.known for iv in ivs)
    text = f"Each cell: value [95% interval], {count} {unit} per cell"
    text += f" ({'; '.join(methods)})" if methods else ""
    if missing:
        text += (
            f"; {missing} cell{'s have' if missing > 1 else ' has'} no interval (no per-sample records, or too "
            "few for a bootstrap)"
        )
    return text + f"; per cell in {csv}."
