"""Perplexity by context length (`ropeext eval ppl`): every selected variant, noft and fine-tuned."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ropeext.report import findings as F
from ropeext.report import measures
from ropeext.report.tables import load_json, order_rows, parse_variant, section
from ropeext.suites._suite import Figure, Suite
from ropeext.text import plural

if TYPE_CHECKING:
    import pandas as pd

# The report's stack (pandas, matplotlib) loads only when a report is written: the CLI and the workflow
# import this module for its declaration alone.


def ppl_table(metrics: list[dict]) -> pd.DataFrame:
    """Rows: variants; columns: method, layout, then one column per context length."""
    # heavy: pandas loads only when tables are built
    import pandas as pd

    rows = []
    for m in metrics:
        info = parse_variant(m["variant"])
        row = {"variant": m["variant"], "method": info["method"], "layout": info["layout"]}
        row.update({int(c): v for c, v in m["ppl"].items()})
        rows.append(row)
    return order_rows(pd.DataFrame(rows).set_index("variant"))


SHOWN_DOCUMENTS = 8  # the report names at most this many scored documents (metrics.json lists all)


def documents_line(metrics: list[dict]) -> str:
    """The held-out documents scored (the same for every variant), by id with tokens and windows; "" if unrecorded."""
    scored = next((m["documents_scored"] for m in metrics if m.get("documents_scored")), None)
    if not scored:
        return ""
    named = ", ".join(
        f"`{d['id']}` ({d['tokens']:,} tokens, {plural(d['windows'], 'window')})" for d in scored[:SHOWN_DOCUMENTS]
    )
    more = f" and {len(scored) - SHOWN_DOCUMENTS} more (metrics.json)" if len(scored) > SHOWN_DOCUMENTS else ""
    patterns = next((m["exclude"] for m in metrics if m.get("exclude")), [])
    excluded = f"; not scored: ids matching {', '.join(f'`{p}`' for p in patterns)} (eval.ppl.exclude)"
    return f"Documents scored: {named}{more}{excluded if patterns else ''}."


def report(doc, paths: list) -> None:
    metrics = load_json(paths)
    df = ppl_table(metrics)
    doc.variants |= set(df.index)
    lengths = [c for c in df.columns if isinstance(c, int)]
    cells = {m["variant"]: measures.ppl_cells(m) for m in metrics}
    doc.lines_plot(
        {v: (lengths, [row[c] for c in lengths]) for v, row in df.iterrows()},
        "ppl.png",
        df,
        cells=cells,
        xlabel="context length (tokens)",
        ylabel="perplexity",
        logx=True,
        logy=True,
        title="Perplexity by context length",
        vlines=doc.vlines,
    )
    scored = [m.get("tokens_scored") for m in metrics if m.get("tokens_scored")]
    note = f"(Each perplexity scores the same {min(scored)} tokens at every length.)" if scored else ""
    body = [
        "Held-out test documents; at every length the same target tokens are scored, each with up to "
        "that many tokens of context (sliding window, `ropeext eval ppl`).",
        "",
        *([documents, ""] if (documents := documents_line(metrics)) else []),
        *doc.table(df, cells, "ppl.csv"),
        "",
        "![perplexity by length](ppl.png)",
        "",
    ]
    series = measures.length_series(df[lengths])
    body += doc.extension(
        "Perplexity", F.PPL, doc.by_target(series, F.PPL), note, evidence=doc.evidence_at(series, cells)
    )
    body.append("")
    doc.sections += section("Perplexity by context length", body)


SUITE = Suite(
    name="ppl",
    section="eval.ppl",
    rule="eval_ppl",
    priority=5,
    order=10,
    report=report,
    settings=("eval.dtype",),
    inputs=lambda config: {"tokens": f"{config['results_dir']}/tokens/test.parquet"},
    figures={
        "table": Figure("ppl.html", "ppl_table.rst", "Perplexity"),
        "by_length": Figure("ppl.png", "ppl.rst", "Perplexity"),
    },
    variant_files=("ppl.png",),
    command="eval ppl --config {params.cfg} --model {input.model} --tokens {input.tokens} "
    "--output-dir {params.outdir} --threads {threads} --variant {params.variant}",
)
