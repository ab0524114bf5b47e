"""Passkey retrieval (`ropeext eval passkey`): accuracy by prompt length and key depth."""

from __future__ import annotations

import numpy as np

from ropeext.eval.passkey import summary_table
from ropeext.report import findings as F
from ropeext.report import measures
from ropeext.report.plots import plot_heatmap_grid
from ropeext.report.tables import load_json, order_rows, section
from ropeext.suites._suite import Figure, Suite


def report(doc, paths: list) -> None:
    # the report's stack (pandas, matplotlib) loads only when a report is written; the CLI and the workflow
    # import this module for its declaration alone

    metrics = load_json(paths)
    df = order_rows(summary_table(metrics))
    doc.variants |= set(df.index)
    cells = {m["variant"]: measures.passkey_cells(m) for m in metrics}
    series = measures.length_series(df)
    lengths = sorted({k for vals in series.values() for k in vals})
    doc.lines_plot(
        {v: (lengths, [series[v].get(k) for k in lengths]) for v in df.index},
        "passkey_by_length.png",
        df,
        cells=cells,
        xlabel="prompt length (tokens)",
        ylabel="accuracy (%)",
        logx=True,
        title="Passkey retrieval by length",
        vlines=doc.vlines,
        ylim=(-3, 103),
        zero_note="every variant at 0 % at every length",
    )
    by_name = {m["variant"]: m for m in metrics}
    panels = {}
    for v in df.index:
        m = by_name[v]
        grid = np.array([[np.nan if x is None else 100.0 * x for x in row] for row in m["grid"]], dtype=float)
        panels[F.label(v)] = (grid.T, [f"{d:g}" for d in m["depths"]], m["lengths"])
    doc.add(
        plot_heatmap_grid(
            panels,
            doc.out / "passkey_heatmaps.png",
            xlabel="length (tokens)",
            ylabel="key depth",
            title="Passkey accuracy (%): depth x length",
        )
    )
    body = [
        *doc.table(df, cells, "passkey.csv", ".1f"),
        "",
        "![passkey accuracy by length](passkey_by_length.png)",
        "",
        "![passkey heat maps](passkey_heatmaps.png)",
        "",
    ]
    by_length = {v: {int(c): iv for c, iv in by.items() if c.isdigit()} for v, by in cells.items()}
    evidence = doc.evidence_at(series, by_length)
    body += doc.extension("Passkey accuracy", F.SCORE, doc.by_target(series, F.SCORE), evidence=evidence)
    doc.sections += section("Passkey retrieval (accuracy %, rows: variants, columns: prompt length)", body)


SUITE = Suite(
    name="passkey",
    section="eval.passkey",
    rule="eval_passkey",
    priority=1,
    settings=("seed", "eval.dtype"),
    order=30,
    report=report,
    figures={
        "table": Figure("passkey.html", "passkey_table.rst", "Passkey"),
        "by_length": Figure("passkey_by_length.png", "passkey_by_length.rst", "Passkey"),
        "heatmaps": Figure("passkey_heatmaps.png", "passkey_heatmaps.rst", "Passkey"),
    },
    variant_files=("heatmap.png",),
    command="eval passkey --config {params.cfg} --model {input.model} "
    "--output-dir {params.outdir} --no-progress --variant {params.variant}",
)
