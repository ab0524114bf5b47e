"""The pipeline's report: tables in the papers' shape (variants as rows), CSV, PNG and markdown."""

from __future__ import annotations

import json
from pathlib import Path

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


def _order(df: pd.DataFrame) -> pd.DataFrame:
    """noft rows first, then by method and layout, so before/after fine-tuning read top to bottom."""
    keys = [(parse_variant(v)["layout"] != "noft", parse_variant(v)["method"], parse_variant(v)["layout"]) for v in df.index]
    return df.iloc[sorted(range(len(df)), key=lambda i: keys[i])]


def ppl_table(metrics: list[dict]) -> pd.DataFrame:
    """Rows: variants; columns: method, layout, then one column per context length."""
    rows = []
    for m in metrics:
        info = parse_variant(m["variant"])
        row = {"variant": m["variant"], "method": info["method"], "layout": info["layout"]}
        row.update({int(c): v for c, v in m["ppl"].items()})
        rows.append(row)
    return _order(pd.DataFrame(rows).set_index("variant"))


def phenomenon(df: pd.DataFrame, train_length: int, target_length: int) -> list[str]:
    """What the perplexity table shows around the windows, in plain sentences."""
    lengths = [c for c in df.columns if isinstance(c, int)]
    if train_length not in lengths or target_length not in lengths:
        return []
    lines = [f"Perplexity at L' = {target_length} relative to L = {train_length} (1.00 = flat):", ""]
    for variant, row in df.iterrows():
        lines.append(f"- `{variant}`: {row[target_length] / row[train_length]:.2f}x")
    return lines


# what ``report.references: null`` names: the published values shipped with the repository
REPOSITORY_REFERENCES = Path(__file__).resolve().parents[1] / "reference_values.yaml"  # package data (config/)


def _compare_geometry(folder: Path) -> dict:
    """The geometry a `ropeext compare` folder was solved for (from its compare.json)."""
    f = folder / "compare.json"
    if not f.is_file():
        return {}
    solutions = json.loads(f.read_text()).get("solutions", {})
    first = next(iter(solutions.values()), {})
    return {k: first.get(k) for k in ("rope_theta", "head_dim", "train_length", "target_length")}


def variant_styles(variants: list[str]) -> dict[str, dict]:
    """One colour per method, one line style per layout (dashed: no fine-tuning)."""
    import matplotlib

    methods = sorted({parse_variant(v)["method"] for v in variants})
    layouts = sorted({parse_variant(v)["layout"] for v in variants} - {"noft"})
    colours = matplotlib.colormaps["tab10"]
    dashes = {"noft": "--"} | {lay: ls for lay, ls in zip(layouts, ["-", ":", "-.", (0, (5, 1)), (0, (1, 3))])}
    markers = {"noft": "x"} | {lay: m for lay, m in zip(layouts, ["o", "s", "^", "D", "v"])}
    return {v: {"color": colours(methods.index(parse_variant(v)["method"]) % 10),
                "linestyle": dashes.get(parse_variant(v)["layout"], "-"),
                "marker": markers.get(parse_variant(v)["layout"], "o")} for v in variants}


def _section(title: str, body: list[str]) -> list[str]:
    return [f"## {title}", ""] + body + [""]


def build_report(config: dict, inputs: dict[str, list], out: Path) -> list[Path]:
    """Write summary.md plus a CSV per table and the plots; return the written files.

    ``inputs`` holds lists of the stages' files by kind (ppl, passkey, longbench, openllm, ruler, bf16,
    compare, angles), ``references`` (the published values file), ``base_model`` (the base model's
    import_manifest.json or pre-training training_summary.json) and ``training`` (the fine-tuned
    variants' training_summary.json files, each in its model directory, named by the variant)."""
    from ropeext.report.document import Report

    return Report(config, inputs, out).write()
