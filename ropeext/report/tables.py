"""Pieces every report section shares: variant names, metrics files, row order, markdown tables, styles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is heavy; the light paths (CLI help, workflow parse) import this module
    import pandas as pd

from ropeext.io import read_json


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
