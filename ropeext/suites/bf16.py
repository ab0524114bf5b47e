"""BF16 relative-position deviation (`ropeext analyze bf16`): AnchorAttention's premise, per variant."""

from __future__ import annotations

from pathlib import Path

from ropeext.analysis.plots import plot_key_columns
from ropeext.report import findings as F
from ropeext.report import measures
from ropeext.report.plots import plot_lines
from ropeext.report.tables import load_json, order_rows, section
from ropeext.suites._suite import Figure, Suite


def report(doc, paths: list) -> None:
    # the report's stack (pandas, matplotlib; torch for the analysis) loads only when a report is written;
    # the CLI and the workflow import this module for its declaration alone
    import pandas as pd

    # heavy: ropeext.analysis.bf16 imports torch at its top, and this module is imported for its declaration
    from ropeext.analysis.bf16 import summary_row

    rows, series, panels, cells = [], {}, {}, {}
    for m in load_json(paths):
        variant = m.get("variant") or Path(m.get("model", "")).name
        row = summary_row(m)
        rows.append({"variant": variant, **row})
        cells[variant] = measures.bf16_cells(m)
        doc.bf16_results[variant] = (row, m)
        for setting, res in (m.get("settings") or {}).items():
            pts = [(d, y) for d, y in zip(res["shift"]["delta1"], res["shift"]["column"]["mean"]) if y and y > 0]
            if pts:
                series[f"{F.label(variant)}, {setting}"] = ([d for d, _ in pts], [y for _, y in pts])
                panels.setdefault(variant, []).append(f"{F.label(variant)}, {setting}")
    df = order_rows(pd.DataFrame(rows).set_index("variant"))
    doc.variants |= set(df.index)
    keep = [c for c in df.columns if c.endswith(("D_0_16", "first_key_share")) or c == "bf16_over_fp32"]
    body = [
        "In exact arithmetic a shift of every position changes nothing; larger values mean BF16 "
        "breaks RoPE's relative-position property more (`ropeext analyze bf16`).",
        "",
        *doc.table(df, cells, "bf16.csv", ".3g", shown=keep),
        "",
    ]
    # one panel per variant, one line per setting (a colour per setting, the same in every panel)
    settings = list(dict.fromkeys(n.rsplit(", ", 1)[1] for n in series))
    colours = {s: f"C{i % 10}" for i, s in enumerate(settings)}
    styles = {
        n: {"color": colours[n.rsplit(", ", 1)[1]], "linestyle": "-" if n.endswith(" bf16") else "--"} for n in series
    }
    doc.add(
        plot_lines(
            series,
            doc.out / "bf16_deviation.png",
            xlabel="position shift delta1 (tokens)",
            ylabel="D(delta1, delta2) (summed |change| in attention)",
            logy=True,
            styles=styles,
            panels=panels,
            labels={n: n.rsplit(", ", 1)[1] for n in series},
            title="Attention deviation under a position shift: one panel per variant, one line per setting",
        )
    )
    body += ["![deviation by shift](bf16_deviation.png)", ""]
    for variant in df.index:
        row, m = doc.bf16_results[variant]
        if (m.get("settings") or {}).get("bf16", {}).get("key_columns"):
            png = doc.add(plot_key_columns(m, doc.out / "bf16" / f"{variant}-key_columns.png"))
            body += [f"![key columns of {variant}](bf16/{png.name})", ""]
        sentence = F.bf16_sentence(variant, row, m)
        body.append(sentence)
        doc.glance.append(f"- BF16: {sentence}")
    doc.sections += section("BF16 relative-position deviation (D(0,16): attention change under a position shift)", body)


SUITE = Suite(
    name="bf16",
    section="analysis.bf16",
    rule="analyze_bf16",
    order=70,
    report=report,
    metrics="bf16_deviation.json",
    inputs=lambda config: {"tokens": f"{config['results_dir']}/tokens/test.parquet"},
    figures={
        "table": Figure("bf16.html", "bf16_table.rst", "BF16"),
        "deviation": Figure("bf16_deviation.png", "bf16_deviation.rst", "BF16"),
    },
    variant_files=("deviation_vs_delta.png",),
    command="analyze bf16 --config {params.cfg} --model {input.model} --tokens {input.tokens} "
    "--output {params.outdir} --threads {threads} --variant {params.variant}",
)
