"""LongBench / LongBench-E (`ropeext eval longbench`): the user's copy (eval.longbench.data_dir), lm-eval's
tasks, or the embedded LongBench-E-style code-completion task built from the held-out split (rule
longbench_embedded)."""

from __future__ import annotations

import shlex

import numpy as np

from ropeext.eval.longbench.results import table1
from ropeext.report import findings as F
from ropeext.report import measures
from ropeext.report.tables import load_json, order_rows, section
from ropeext.suites._suite import Figure, Suite


def data(config: dict) -> dict:
    """The embedded task's files, or nothing when the user names their LongBench copy or lm-eval runs the suite."""
    lb = config["eval"]["longbench"]
    if lb["data_dir"] or lb["engine"] == "lm_eval":
        return {}
    return {"data": f"{config['results_dir']}/eval/longbench-data/buckets.json"}


def data_arg(config: dict, input) -> str:
    lb = config["eval"]["longbench"]
    if lb["engine"] == "lm_eval":
        return ""
    embedded = f"{config['results_dir']}/eval/longbench-data"
    return f"--data {shlex.quote(lb['data_dir'] or embedded)}"


def report(doc, paths: list) -> None:
    # the report's stack (pandas, matplotlib) loads only when a report is written; the CLI and the workflow
    # import this module for its declaration alone

    metrics = load_json(paths)
    df = order_rows(table1(metrics, [m["variant"] for m in metrics]))
    doc.variants |= set(df.index)
    by_name = {m["variant"]: m for m in metrics}
    cells = {v: measures.longbench_cells(m) for v, m in by_name.items()}
    series, xticks, tokens = {}, {}, True
    for v in df.index:
        buckets = measures.buckets_of(by_name[v])
        edged = by_name[v].get("unit") == "tokens" and all(hi for _, _, hi in buckets)
        tokens = tokens and edged
        xs = [hi if edged else i + 1 for i, (_, _, hi) in enumerate(buckets)]
        xticks.update({x: name for x, (name, _, _) in zip(xs, buckets)})
        avg = by_name[v].get("bucket_avg") or {}
        series[v] = (xs, [np.nan if avg.get(name) is None else avg[name] for name, _, _ in buckets])
    body = doc.table(df, cells, "longbench.csv")
    # drawn even without buckets (then the panel says "nothing measured"): the workflow declares the file
    doc.lines_plot(
        series,
        "longbench_buckets.png",
        df,
        cells={v: {x: cells[v].get(name) for x, name in xticks.items()} for v in df.index},
        ylabel="score (x100)",
        logx=tokens and bool(xticks),
        xticks=xticks,
        xlabel="length bucket (tokens; plotted at its upper edge)" if tokens else "length bucket",
        title="LongBench-style score by length bucket",
        vlines=doc.vlines if tokens and xticks else None,
        zero_note="every variant scores 0 in every bucket",
    )
    body += ["", "![score by length bucket](longbench_buckets.png)"]
    pairs, where, evidence = {}, {}, {}
    for t in doc.targets:
        pairs[t], evidence[t] = {}, {}
        for v in F.of_target(dict.fromkeys(df.index), t):
            found = measures.longbench_within_at(by_name[v], doc.L, t)
            pairs[t][v] = (found["within"], found["at"])
            if found["bucket"]:
                where[t] = f" (bucket {found['bucket']} {found['unit']}, against the mean of {F.join(found['inside'])})"
                evidence[t][v] = cells[v].get(found["bucket"])
    body += [""] + doc.extension("LongBench score", F.SCORE, pairs, "", where, evidence)
    doc.sections += section(
        "LongBench-E-style evaluation (score x100 per length bucket, Avg, Avg above the first bucket)",
        body + doc.beside("longbench", df, metrics),
    )


SUITE = Suite(
    name="longbench",
    section="eval.longbench",
    rule="eval_longbench",
    priority=2,
    settings=("seed", "eval.dtype"),
    order=40,
    report=report,
    inputs=data,
    args=data_arg,
    figures={
        "table": Figure("longbench.html", "longbench_table.rst", "LongBench"),
        "buckets": Figure("longbench_buckets.png", "longbench_buckets.rst", "LongBench"),
    },
    variant_files=("longbench.png",),
    command="eval longbench --config {params.cfg} --model {input.model} "
    "{params.args} --output-dir {params.outdir} --no-progress --variant {params.variant}",
)
