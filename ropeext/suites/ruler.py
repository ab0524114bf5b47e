"""RULER-style suite (`ropeext eval ruler`): the project's generator over an essay haystack, or lm-eval's tasks."""

from __future__ import annotations

import os
import shlex

from ropeext.eval.ruler.report import ruler_table, ruler_task_heatmaps
from ropeext.report import findings as F
from ropeext.report import measures
from ropeext.report.tables import load_json, order_rows, section
from ropeext.suites._suite import Figure, Suite


def essay(config: dict) -> dict:
    """The essay haystack and its tokenizer, which this project's RULER generator reads (lm-eval brings its own)."""
    if config["eval"]["ruler"]["engine"] == "lm_eval":
        return {}
    results = config["results_dir"]
    return {
        "essay": config["eval"]["ruler"]["essay_source"] or f"{results}/tokens/test.parquet",
        "tokenizer": f"{results}/tokenizer/tokenizer.json",
    }


def essay_args(config: dict, input) -> str:
    if config["eval"]["ruler"]["engine"] == "lm_eval":
        return ""
    tokenizer = os.path.dirname(input.tokenizer)
    return f"--essay-source {shlex.quote(input.essay)} --essay-tokenizer {shlex.quote(tokenizer)}"


def report(doc, paths: list) -> None:
    # the report's stack (pandas, matplotlib) loads only when a report is written; the CLI and the workflow
    # import this module for its declaration alone

    metrics = load_json(paths)
    df = order_rows(ruler_table(metrics))
    doc.variants |= set(df.index)
    cells = {m["variant"]: measures.ruler_cells(m) for m in metrics}
    lengths = [c for c in df.columns if isinstance(c, int)]
    series = measures.length_series(df[lengths])
    doc.lines_plot(
        {v: (lengths, [series[v].get(k) for k in lengths]) for v in df.index},
        "ruler_by_length.png",
        df,
        xlabel="length (tokens)",
        ylabel="average over tasks (%)",
        logx=True,
        ylim=(-3, 103),
        title="RULER-style average by length",
        vlines=doc.vlines,
    )
    maps = ruler_task_heatmaps(metrics, doc.out / "ruler")
    doc.written += maps
    body = [*doc.table(df, cells, "ruler.csv", ".1f"), "", "![RULER average by length](ruler_by_length.png)", ""]
    body += [f"![{p.stem}](ruler/{p.name})" for p in maps[:4]] + [""]
    body += doc.extension(
        "RULER average", F.SCORE, doc.by_target(series, F.SCORE), evidence=doc.evidence_at(series, cells)
    )
    doc.sections += section(
        "RULER-style suite (average over tasks, % by length; effective length)", body + doc.beside("ruler", df, metrics)
    )


SUITE = Suite(
    name="ruler",
    section="eval.ruler",
    rule="eval_ruler",
    order=60,
    report=report,
    inputs=essay,
    args=essay_args,
    figures={"png": Figure("heatmap.png", "ruler.rst", "RULER")},
    command="eval ruler --config {params.cfg} --model {input.model} "
    "{params.args} --output-dir {params.outdir} "
    "--no-progress --variant {params.variant}",
)
