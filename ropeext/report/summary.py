"""The pipeline's report: tables in the papers' shape (variants as rows), CSV, PNG and markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ropeext.errors import RopeextError


def parse_variant(name: str) -> dict:
    """'tiny-dprope-1024-anchor' -> model, method, target, layout (method names may hold underscores)."""
    parts = name.split("-")
    if len(parts) < 4:
        return {"model": name, "method": "", "target": "", "layout": ""}
    return {"model": parts[0], "method": "-".join(parts[1:-2]), "target": parts[-2], "layout": parts[-1]}


def load_metrics(paths: list[str | Path]) -> list[dict]:
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise RopeextError(f"metrics file not found: {p}")
        with open(p) as fh:
            m = json.load(fh)
        m.setdefault("variant", p.parent.name)
        out.append(m)
    return out


def ppl_table(metrics: list[dict]) -> pd.DataFrame:
    """Rows: variants (sorted by method, then no-fine-tune first); columns: context lengths."""
    rows = []
    for m in metrics:
        info = parse_variant(m["variant"])
        row = {"variant": m["variant"], "method": info["method"], "layout": info["layout"]}
        row.update({int(c): v for c, v in m["ppl"].items()})
        rows.append(row)
    df = pd.DataFrame(rows)
    order = {"noft": 0}
    df["_o"] = df["layout"].map(lambda x: order.get(x, 1))
    df = df.sort_values(["_o", "method", "layout"]).drop(columns="_o").set_index("variant")
    return df


def markdown_table(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([df.index.name or ""] + cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for idx, row in df.iterrows():
        cells = []
        for v in row.tolist():
            if isinstance(v, float):
                cells.append(format(v, floatfmt))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


def phenomenon(df: pd.DataFrame, train_length: int, target_length: int) -> list[str]:
    """Plain statements of what the perplexity table shows around the pre-training window."""
    lines = []
    if train_length not in df.columns or target_length not in df.columns:
        return lines
    ratio = df[target_length] / df[train_length]
    for variant, r in ratio.items():
        lines.append(f"- `{variant}`: perplexity at {target_length} is {r:.2f}x its value at {train_length}")
    return lines
