"""HTML renderings of the report for Snakemake's HTML report: each table (CSV) as an HTML page, the published
comparisons on one page, and summary.md as a self-contained page (its figures inlined).

``write_pages(out, written)`` writes them beside the files the report wrote; the workflow declares the pages
as the report rule's ``report()`` outputs (workflow/rules/report.smk).
"""

from __future__ import annotations

import base64
import html
import math
import mimetypes
import numbers
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from markdown_it import MarkdownIt

from ropeext.io import write_text

if TYPE_CHECKING:  # pandas is heavy; the workflow imports this module's names for its declaration
    import pandas as pd

PUBLISHED = "published"  # published-<table>.csv: the side-by-side comparisons with published values
STYLE = """
body { font-family: sans-serif; font-size: 14px; margin: 1em 2em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f2f2f2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.missing { color: #999; text-align: center; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def format_cell(value, floatfmt: str = ".4g") -> tuple[str, str]:
    """(escaped text, CSS class) of one table cell: numbers right-aligned (whole floats as integers, large
    ones without exponent), missing values as a dash, text escaped."""
    if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
        return "&ndash;", "missing"
    if isinstance(value, (bool, np.bool_)):
        return html.escape(str(bool(value))), ""
    if isinstance(value, numbers.Integral):
        return f"{int(value)}", "num"
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isinf(v):
            return ("&infin;" if v > 0 else "&minus;&infin;"), "num"
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v)}", "num"
        return (f"{v:.0f}" if abs(v) >= 1e4 else format(v, floatfmt)), "num"
    return html.escape(str(value)), ""


def table_html(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """One HTML table: the header row, then a row per record; every name and value escaped."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for record in df.itertuples(index=False, name=None):
        cells = []
        for value in record:
            text, cls = format_cell(value, floatfmt)
            cells.append(f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def page(title: str, body: str) -> str:
    """A standalone HTML page."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def read_table(path: Path) -> pd.DataFrame:
    # heavy: pandas loads only when pages are written
    import pandas as pd

    return pd.read_csv(path)


def csv_page(path: Path) -> str:
    """The page of one CSV table of the report: its name, size and the table."""
    df = read_table(path)
    intro = f"<p><code>{html.escape(path.name)}</code>: {len(df)} rows, {len(df.columns)} columns.</p>"
    return page(path.stem, f"<h2>{html.escape(path.stem)}</h2>\n{intro}\n{table_html(df)}")


def published_page(paths: list[Path]) -> str:
    """The side-by-side comparisons with published values on one page (one table each), or a sentence when the
    configuration matched none."""
    if not paths:
        body = (
            "<p>No published table was compared with this run's numbers: the report states why in its "
            '"Published reference values" section (for example, a different model or setting).</p>'
        )
    else:
        body = "\n".join(
            f"<h3>{html.escape(p.stem.removeprefix(PUBLISHED + '-'))}</h3>\n{table_html(read_table(p))}" for p in paths
        )
    return page("Published values beside ours", f"<h2>Published values beside ours</h2>\n{body}")


def _data_uri(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def markdown_html(text: str, folder: Path | None = None) -> str:
    """Markdown (CommonMark with pipe tables) as HTML; raw HTML in the text is escaped, and an image whose
    relative path names a file under ``folder`` is inlined (a data URI), so the page stands alone."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for token in tokens:
        for child in token.children or []:
            if child.type != "image" or folder is None:
                continue
            src = str(child.attrGet("src") or "")
            target = (Path(folder) / src).resolve() if src and "://" not in src and not src.startswith("/") else None
            if target and target.is_file() and Path(folder).resolve() in target.parents:
                child.attrSet("src", _data_uri(target))
    return md.renderer.render(tokens, md.options, {})


def summary_page(path: Path) -> str:
    return page(path.stem, markdown_html(Path(path).read_text(), Path(path).parent))


def write_pages(out: Path, written: list[Path]) -> list[Path]:
    """Beside the report's files in ``out``: ``<name>.html`` for every CSV table, ``published.html`` for the
    published comparisons (always written) and ``summary.html`` for summary.md; returns the pages written."""
    out = Path(out)
    tables = sorted({Path(p) for p in written if Path(p).suffix == ".csv" and Path(p).parent == out})
    published = [p for p in tables if p.stem.startswith(PUBLISHED + "-")]
    pages = [write_text(p.with_suffix(".html"), csv_page(p)) for p in tables if p not in published]
    pages.append(write_text(out / f"{PUBLISHED}.html", published_page(published)))
    summary = out / "summary.md"
    if summary.is_file():
        pages.append(write_text(out / "summary.html", summary_page(summary)))
    return pages
