"""Open LLM tasks through lm-eval (`ropeext eval openllm`): short-context ability kept after extension."""

from __future__ import annotations

from ropeext.eval.openllm import summary_table
from ropeext.report import findings as F
from ropeext.report import measures
from ropeext.report.tables import load_json, order_rows, section
from ropeext.suites._suite import Figure, Suite


def report(doc, paths: list) -> None:
    # the report's stack (pandas, matplotlib) loads only when a report is written; the CLI and the workflow
    # import this module for its declaration alone
    import pandas as pd

    metrics = load_json(paths)
    df = order_rows(summary_table(metrics))
    doc.variants |= set(df.index)
    cells = {m["variant"]: measures.openllm_cells(m) for m in metrics if m.get("variant") in df.index}
    body = doc.table(df, cells, "openllm.csv")
    avg = {v: x for v, x in df["Avg"].items() if pd.notna(x)} if "Avg" in df.columns else {}
    if avg:
        sentence = average_sentence(avg, {v: cells.get(v, {}).get("Avg") for v in avg})
        body += ["", sentence]
        doc.glance.append(f"- {sentence}")
    doc.sections += section(
        "Open LLM tasks through lm-eval (accuracy x100; bits per byte as is)", body + doc.beside("openllm", df, metrics)
    )


def average_sentence(avg: dict[str, float], cells: dict) -> str:
    """The Open LLM averages in one sentence with their intervals: one value for every variant, or the highest and
    lowest and whether their intervals tell them apart."""

    def value(v):
        return F.fmt_iv(cells.get(v) if cells.get(v) is not None else avg[v], F.SCORE)

    hi, lo = max(avg, key=avg.get), min(avg, key=avg.get)
    if avg[hi] == avg[lo]:
        return f"Open LLM average: {value(hi)} for {'every variant' if len(avg) > 1 else F.label(hi)}."
    told = F.order(cells.get(hi), cells.get(lo), F.SCORE)
    verdict = "told apart" if told else "not told apart (overlapping intervals, or one without an interval)"
    return (
        f"Open LLM average: highest `{F.label(hi)}` ({value(hi)}), lowest `{F.label(lo)}` ({value(lo)}), "
        f"{avg[hi] - avg[lo]:.1f} points apart: {verdict}."
    )


SUITE = Suite(
    name="openllm",
    section="eval.openllm",
    rule="eval_openllm",
    priority=4,
    settings=("seed", "eval.dtype"),
    order=50,
    report=report,
    inputs=lambda config: {"heldout": f"{config['results_dir']}/tokens/test.parquet"},
    figures={"table": Figure("openllm.html", "openllm_table.rst", "Open LLM")},
    command="eval openllm --config {params.cfg} --model {input.model} "
    "--heldout {input.heldout} --output-dir {params.outdir} --no-progress --variant {params.variant}",
)
