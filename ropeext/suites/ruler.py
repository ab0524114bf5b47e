"""RULER-style suite (`ropeext eval ruler`): the project's generator over an essay haystack, or lm-eval's tasks."""

from __future__ import annotations

import os
import shlex

import numpy as np

from ropeext.eval.ruler.report import ruler_table
from ropeext.report import findings as F
from ropeext.report import measures
from ropeext.report.plots import plot_heatmap_grid
from ropeext.report.tables import load_json, order_rows, section
from ropeext.suites._suite import Figure, Suite
from ropeext.text import number


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


def ruler_task_grid(metrics: list[dict], path):
    """One heat map per task (rows: variants, columns: lengths, score %), side by side on one colour scale."""
    lengths = sorted({int(L) for m in metrics for L in m["lengths"]})
    tasks = list(dict.fromkeys(t for m in metrics for t in m["scores"]))
    panels = {
        task: (
            [[np.nan if (x := m["scores"].get(task, {}).get(str(L))) is None else x for L in lengths] for m in metrics],
            [m["variant"].split("-", 1)[-1] for m in metrics],  # method-L'-layout
            lengths,
        )
        for task in tasks
    }
    return plot_heatmap_grid(
        panels, path, title="RULER-style score per task (%)", xlabel="length (tokens)", ylabel="variant", columns=3
    )


def below_shortest(row, lengths: list[int]):
    """A variant's effective length, or RULER's notation for one that fails already at the shortest length it
    was measured at ("<4096"; the RULER paper writes "<4K")."""
    if number(row["effective_length"]) is not None:
        return int(row["effective_length"])
    measured = [L for L in lengths if number(row[L]) is not None]
    return f"<{measured[0]}" if measured else None


def report(doc, paths: list) -> None:
    # the report's stack (pandas, matplotlib) loads only when a report is written; the CLI and the workflow
    # import this module for its declaration alone

    metrics = load_json(paths)
    df = order_rows(ruler_table(metrics))
    doc.variants |= set(df.index)
    cells = {m["variant"]: measures.ruler_cells(m) for m in metrics}
    lengths = [c for c in df.columns if isinstance(c, int)]
    df["effective_length"] = [below_shortest(row, lengths) for _, row in df.iterrows()]
    series = measures.length_series(df[lengths])
    doc.lines_plot(
        {v: (lengths, [series[v].get(k) for k in lengths]) for v in df.index},
        "ruler_by_length.png",
        df,
        cells=cells,
        xlabel="length (tokens)",
        ylabel="average over tasks (%)",
        logx=True,
        ylim=(-3, 103),
        title="RULER-style average by length",
        vlines=doc.vlines,
        zero_note="every variant at 0 % at every length",
    )
    by_name = {m["variant"]: m for m in metrics}
    doc.add(ruler_task_grid([by_name[v] for v in df.index], doc.out / "ruler_tasks.png"))
    body = [*doc.table(df, cells, "ruler.csv", ".1f"), "", "![RULER average by length](ruler_by_length.png)", ""]
    body += ["![RULER score per task](ruler_tasks.png)", ""]
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
    priority=3,
    settings=("seed", "eval.dtype"),
    order=60,
    report=report,
    inputs=essay,
    args=essay_args,
    figures={
        "table": Figure("ruler.html", "ruler_table.rst", "RULER"),
        "by_length": Figure("ruler_by_length.png", "ruler_by_length.rst", "RULER"),
        "tasks": Figure("ruler_tasks.png", "ruler_tasks.rst", "RULER"),
    },
    variant_files=("heatmap.png",),
    command="eval ruler --config {params.cfg} --model {input.model} "
    "{params.args} --output-dir {params.outdir} "
    "--no-progress --variant {params.variant}",
)
