"""The pipeline's report: tables in the papers' shape (variants as rows), CSV, PNG and markdown."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from ropeext.errors import RopeextError
from ropeext.io import atomic_path, read_json, write_text


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


def markdown_table(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([df.index.name or ""] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in df.iterrows():
        cells = []
        for v in row.tolist():
            if isinstance(v, float):
                cells.append("–" if pd.isna(v) else format(v, floatfmt))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


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
REPOSITORY_REFERENCES = Path(__file__).resolve().parents[2] / "config" / "reference_values.yaml"


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
    """Write summary.md plus a CSV per table and the plots; return the written files."""
    from ropeext.report import references as published
    from ropeext.report.plots import plot_lines

    out.mkdir(parents=True, exist_ok=True)
    L = config["model"]["train_length"]
    targets = config["extension"]["target_lengths"]
    written: list[Path] = []
    md = [f"# ropeext report: {config['experiment']}", "",
          f"Base model `{config['model']['path'] or config['model']['name']}` (pre-training window L = {L}), "
          f"extended to L' = {', '.join(map(str, targets))} with {', '.join(config['extension']['methods'])}, "
          f"fine-tuned with the layouts {', '.join(config['extension']['layouts'])}. "
          "Variants are named `model-method-L'-layout`; `noft` is the method applied to the base model "
          "without fine-tuning (`none-...-noft` is the base model itself).", ""]

    def save(df: pd.DataFrame, name: str, index: bool = True) -> None:
        with atomic_path(out / name) as tmp:
            df.to_csv(tmp, index=index)
        written.append(out / name)

    refs = published.load_references(inputs.get("references"))
    compared: list = []

    def beside(benchmark: str, df: pd.DataFrame, metrics: list[dict], floatfmt: str = ".2f") -> list[str]:
        """Lines stating what produced our numbers, and the published values beside them where comparable."""
        found = published.beside_ours(benchmark, df, metrics, config, refs, floatfmt)
        compared.extend(found.comparisons)
        for name, frame in found.frames.items():
            save(frame, name)
        return ["", *found.lines]

    def copy(src: Path, dest: Path) -> Path:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        written.append(dest)
        return dest

    if inputs.get("ppl"):
        df = ppl_table(load_json(inputs["ppl"]))
        lengths = [c for c in df.columns if isinstance(c, int)]
        save(df, "ppl.csv")
        series = {v: (lengths, [row[c] for c in lengths]) for v, row in df.iterrows()}
        written.append(plot_lines(series, out / "ppl.png", xlabel="context length (tokens)", ylabel="perplexity",
                                  logx=True, logy=True, title="Perplexity by context length",
                                  vlines={f"L={L}": L} | {f"L'={t}": t for t in targets},
                                  styles=variant_styles(list(df.index))))
        body = ["Held-out test documents; at every length the same target tokens are scored, each with up to "
                "that many tokens of context (sliding window, `ropeext eval ppl`).", "",
                markdown_table(df[["method", "layout"] + lengths]), "", "![perplexity by length](ppl.png)", ""]
        for t in targets:
            body += phenomenon(df[lengths], L, t) + [""]
        md += _section("Perplexity by context length", body)

    for path in inputs.get("compare", []):
        table = pd.read_csv(path)
        name = Path(path).parent.name
        table, found = published.disturbance_beside(table, _compare_geometry(Path(path).parent), refs)
        compared.extend(found)
        save(table, f"disturbance-{name}.csv", index=False)
        body = ["Rotary-angle disturbance (KL from the pre-training angle distribution, mean over pairs; "
                "`ropeext compare`). DPRoPE interpolates only the pairs where that lowers the disturbance.", "",
                markdown_table(table.set_index(table.columns[0]), ".4f")]
        for png in sorted(Path(path).parent.glob("*.png")):
            copy(png, out / f"{name}-{png.name}")
            body += ["", f"![{png.stem}]({name}-{png.name})"]
        md += _section(f"RoPE disturbance ({name})", body)
    for png in inputs.get("angles", []):
        png = Path(png)
        dest = copy(png, out / f"{png.parent.name}-{png.name}")
        md += _section(f"Angle histograms ({png.parent.name})", [f"![angle heat map]({dest.name})"])

    if inputs.get("passkey"):
        from ropeext.eval.passkey import summary_table

        df = _order(summary_table(inputs["passkey"]))
        save(df, "passkey.csv")
        md += _section("Passkey retrieval (accuracy %, rows: variants, columns: prompt length)",
                       [markdown_table(df, ".1f")])
    if inputs.get("longbench"):
        from ropeext.eval.longbench.results import table1

        metrics = load_json(inputs["longbench"])
        df = _order(table1(metrics, [m["variant"] for m in metrics]))
        save(df, "longbench.csv")
        md += _section("LongBench-E-style evaluation (score x100 per length bucket, Avg, Avg above the first bucket)",
                       [markdown_table(df)] + beside("longbench", df, metrics))
    if inputs.get("openllm"):
        from ropeext.eval.openllm import summary_table

        df = _order(summary_table(inputs["openllm"]))
        save(df, "openllm.csv")
        md += _section("Open LLM tasks through lm-eval (accuracy x100; bits per byte as is)",
                       [markdown_table(df)] + beside("openllm", df, load_json(inputs["openllm"])))
    if inputs.get("ruler"):
        from ropeext.eval.ruler.report import ruler_table, ruler_task_heatmaps

        df = _order(ruler_table(inputs["ruler"]))
        save(df, "ruler.csv")
        maps = ruler_task_heatmaps(inputs["ruler"], out / "ruler")
        written += maps
        md += _section("RULER-style suite (average over tasks, % by length; effective length)",
                       [markdown_table(df, ".1f"), ""] + [f"![{p.stem}](ruler/{p.name})" for p in maps[:4]]
                       + beside("ruler", df, load_json(inputs["ruler"])))
    if inputs.get("bf16"):
        from ropeext.analysis.bf16 import summary_row

        rows = []
        for m in load_json(inputs["bf16"]):
            variant = m.get("variant") or Path(m.get("model", "")).name
            rows.append({"variant": variant, **summary_row(m)})
        df = _order(pd.DataFrame(rows).set_index("variant"))
        save(df, "bf16.csv")
        keep = [c for c in df.columns if c.endswith(("D_0_16", "first_key_share")) or c == "bf16_over_fp32"]
        md += _section("BF16 relative-position deviation (D(0,16): attention change under a position shift)",
                       ["In exact arithmetic a shift of every position changes nothing; larger values mean BF16 "
                        "breaks RoPE's relative-position property more (`ropeext analyze bf16`).", "",
                        markdown_table(df[keep], ".3g")])

    if refs.tables or refs.claims:
        md += _section("Published reference values", published.summary_lines(refs, compared))

    written.append(write_text(out / "summary.md", "\n".join(md)))
    return written
