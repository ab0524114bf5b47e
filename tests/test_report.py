import json
import subprocess
import sys
from html.parser import HTMLParser

import pandas as pd
import pytest

from ropeext.io import pyplot, save_figure
from ropeext.report.summary import build_report
from ropeext.report.tables import parse_variant
from ropeext.suites.ppl import ppl_table
from tests.conftest import REPO


def _config():
    from ropeext.config import load_config

    return load_config(REPO / "config" / "config.yaml")


def test_parse_variant_keeps_underscored_methods():
    assert parse_variant("tiny-dynamic_ntk-1024-anchor") == {
        "model": "tiny",
        "method": "dynamic_ntk",
        "target": "1024",
        "layout": "anchor",
    }


def test_ppl_table_orders_noft_first_and_states_the_ratio(tmp_path):
    paths = []
    for v, ppl in (
        ("tiny-pi-1024-full", {"256": 10.0, "1024": 9.0}),
        ("tiny-none-1024-noft", {"256": 10.0, "1024": 25.0}),
    ):
        (tmp_path / v).mkdir()
        (tmp_path / v / "metrics.json").write_text(json.dumps({"variant": v, "ppl": ppl}))
        paths.append(tmp_path / v / "metrics.json")
    df = ppl_table([json.loads(p.read_text()) for p in paths])
    assert list(df.index) == ["tiny-none-1024-noft", "tiny-pi-1024-full"]
    written = build_report(_config(), {"ppl": paths}, tmp_path / "report")
    assert {"ppl.html", "published.html", "summary.html"} <= {p.name for p in written}
    assert "tiny-none-1024-noft" in (tmp_path / "report" / "ppl.html").read_text()
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "holds up for `pi/full` (0.90x); collapses for `none` (2.50x)" in md
    assert pd.read_csv(tmp_path / "report" / "ppl.csv", index_col=0).loc["tiny-none-1024-noft", "1024"] == 25.0


def test_published_values_stand_beside_ours_only_for_the_same_setting(tmp_path):
    for target in (8192, 1024):
        head = 128 if target == 8192 else 32
        train = 4096 if target == 8192 else 256
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ropeext.cli",
                "compare",
                "--rope-theta",
                "10000",
                "--head-dim",
                str(head),
                "--train-length",
                str(train),
                "--target-length",
                str(target),
                "--methods",
                "none,pi,dprope",
                "--interpolated-dims",
                "80" if target == 8192 else "20",
                "--output",
                str(tmp_path / f"compare-{target}" / "table.csv"),
                "--no-mlflow",
            ],
            check=True,
            capture_output=True,
        )
    refs = REPO / "config" / "reference_values.yaml"
    build_report(
        _config(),
        {
            "compare": [tmp_path / "compare-8192" / "table.csv", tmp_path / "compare-1024" / "table.csv"],
            "references": refs,
        },
        tmp_path / "report",
    )
    llama = pd.read_csv(tmp_path / "report" / "disturbance-compare-8192.csv").set_index("method")
    assert llama.loc["dprope", "reduction_vs_pi (paper)"] == 0.72
    assert llama.loc["dprope", "reduction_vs_pi"] == pytest.approx(0.72, abs=0.005)  # ours reproduces it
    tiny = pd.read_csv(tmp_path / "report" / "disturbance-compare-1024.csv")
    assert "reduction_vs_pi (paper)" not in tiny.columns
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "Published reference values" in md and "arXiv:2410.01490" in md


def test_training_sentence_states_processes_strategy_and_rope_dtype():
    from ropeext.report.provenance import training_row, training_sentence

    summary = {
        "steps": 40,
        "tokens": 40 * 8 * 131072,
        "settings": {"batch_size": 8, "precision": "bf16", "gradient_checkpointing": True, "layout": "anchor"},
        "numeric_path": {"device": "cuda", "observed": {"rope_cos": "bfloat16"}},
        "train_windows": 100,
        "window": 131072,
        "processes": 8,
        "strategy": "fsdp",
        "sequence_parallel": 8,
        "rope_dtype": "bfloat16",
    }
    text = training_sentence(training_row(summary), short=False)
    assert "on CUDA x 8 processes (fsdp, 8 processes per window), rotary cos/sin computed in bfloat16." in text
    single = training_sentence(training_row({**summary, "processes": 1, "strategy": "single"}), short=False)
    assert "processes" not in single and single.endswith("on CUDA, rotary cos/sin computed in bfloat16.")


# ----------------------------------------------------------------------------- figures and HTML pages


def _data_lines(ax):
    """The plotted series of an Axes (vertical markers carry labels starting with '_')."""
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def test_more_than_eight_variants_are_faceted_into_panels_of_at_most_eight():
    from ropeext.report.plots import facet_variants, line_figure

    methods = ("none", "pi", "yarn", "dprope", "ntk")
    variants = [f"tiny-{m}-{t}-{lay}" for t in (512, 1024) for m in methods for lay in ("noft", "anchor")]
    series = {v: ([256, 512, 1024], [1.0 + i, 2.0 + i, 3.0 + i]) for i, v in enumerate(variants)}
    # 10 variants per target length: more than 8, so each length is split by layout (5 each)
    panels = facet_variants(variants)
    assert {t: len(vs) for t, vs in panels.items()} == {
        "L' = 512, no fine-tuning": 5,
        "L' = 512, anchor": 5,
        "L' = 1024, no fine-tuning": 5,
        "L' = 1024, anchor": 5,
    }
    fig = line_figure(series, xlabel="x", ylabel="y", panels=panels, vlines={"L=256": 256})
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
    assert len(axes) == 4
    assert all(len(_data_lines(ax)) <= 8 for ax in axes)
    assert sorted(ln.get_label() for ax in axes for ln in _data_lines(ax)) == sorted(variants)
    assert [ax.get_title() for ax in axes] == list(panels)
    assert all(ax.get_xlabel() == "x" and ax.get_ylabel() == "y" for ax in axes)

    # 8 fit one panel; 9 of one target and layout are cut in order into parts of 5 and 4
    assert list(facet_variants(variants[:8])) == [""]
    nine = [f"tiny-m{i}-1024-noft" for i in range(9)]
    assert {t: len(vs) for t, vs in facet_variants(nine).items()} == {
        "L' = 1024, no fine-tuning (1/2)": 5,
        "L' = 1024, no fine-tuning (2/2)": 4,
    }
    # without panels, plot_lines' figure cuts 20 series into panels of at most 8
    fig = line_figure(series, xlabel="x", ylabel="y")
    counts = [len(_data_lines(ax)) for ax in fig.axes if ax.has_data()]
    assert sum(counts) == 20 and max(counts) <= 8
    with pytest.raises(ValueError, match="at most 8 lines per panel"):
        line_figure(series, xlabel="x", ylabel="y", panels={"all": variants})


def test_intervals_in_the_table_draw_a_band_per_series():
    from matplotlib.collections import PolyCollection

    from ropeext.report.plots import line_figure, with_band

    row = {"256": 10.0, "1024": 20.0, "256 lo": 9.0, "256 hi": 11.5, "1024 lo": 18.0, "1024 hi": 23.0}
    assert with_band(([256, 1024], [10.0, 20.0]), row) == ([256, 1024], [10.0, 20.0], [9.0, 18.0], [11.5, 23.0])
    assert with_band(([256], [10.0]), {"256_lo": 9, "256_hi": 11}) == ([256], [10.0], [9], [11])
    assert with_band(([256], [10.0]), {"256": 10.0}) == ([256], [10.0])  # no interval: unchanged
    fig = line_figure(
        {"a-pi-1024-full": with_band(([256, 1024], [10.0, 20.0]), row), "a-pi-1024-noft": ([256, 1024], [5, 6])},
        xlabel="x",
        ylabel="y",
    )
    (ax,) = [a for a in fig.axes if a.has_data()]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(9.0) and ys.max() == pytest.approx(23.0)
    assert len(_data_lines(ax)) == 2


def test_an_all_zero_panel_says_so():
    from ropeext.report.plots import heatmap_figure, line_figure

    zero = {f"t-{m}-64-noft": ([32, 64, 128], [0.0, 0.0, None]) for m in ("none", "pi")}
    some = {f"t-{m}-128-noft": ([32, 64, 128], [0.0, 50.0, 0.0]) for m in ("none", "pi")}
    panels = {"L' = 64": list(zero), "L' = 128": list(some)}
    fig = line_figure(zero | some, xlabel="x", ylabel="accuracy (%)", panels=panels, zero_note="all at 0 %")
    notes = {ax.get_title(): [t.get_text() for t in ax.texts] for ax in fig.axes if ax.get_title()}
    assert "all at 0 %" in notes["L' = 64"] and "all at 0 %" not in notes["L' = 128"]
    fig = heatmap_figure(
        {"zero": ([[0.0, float("nan")], [0.0, 0.0]], ["a", "b"], [1, 2]), "some": ([[0.0, 5.0]], ["a"], [1, 2])},
        title="t",
        xlabel="x",
        ylabel="y",
    )
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["zero\n(0 in every cell)", "some"]


class _Cells(HTMLParser):
    """The text of every th/td cell of an HTML page, unescaped (an independent reading of the table)."""

    def __init__(self):
        super().__init__()
        self.cells, self.classes, self._in = [], [], False

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._in = True
            self.cells.append("")
            self.classes.append(dict(attrs).get("class", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in = False

    def handle_data(self, data):
        if self._in:
            self.cells[-1] += data


def test_table_pages_escape_text_and_format_numbers(tmp_path):
    from ropeext.report.html import published_page, table_html, write_pages

    df = pd.DataFrame(
        {
            "variant": ["<b>a</b> & b", "x"],
            "ppl": [3.14159265, float("nan")],
            "tokens": [123456789.0, 2.0],
            "steps": [3, 40],
            "tiny": [0.000123456, -1.5],
        }
    )
    parsed = _Cells()
    parsed.feed(table_html(df))
    assert parsed.cells[:5] == ["variant", "ppl", "tokens", "steps", "tiny"]
    assert parsed.cells[5:10] == ["<b>a</b> & b", "3.142", "123456789", "3", "0.0001235"]
    assert parsed.cells[10:] == ["x", "\u2013", "2", "40", "-1.5"]  # NaN: a dash
    assert parsed.classes[5:] == ["", "num", "num", "num", "num", "", "missing", "num", "num", "num"]
    assert "<b>" not in table_html(df)

    # the report folder: a page per CSV, the published comparisons on one page, summary.md inlined
    out = tmp_path / "report"
    out.mkdir()
    df.to_csv(out / "ppl.csv", index=False)
    df.to_csv(out / "published-dprope_table1.csv", index=False)
    save_figure(pyplot().figure(), out / "ppl.png")
    (out / "summary.md").write_text(
        "# Report <script>x</script>\n\n| a | b |\n|---|---|\n| 1 | `c` |\n\n"
        "![perplexity](ppl.png)\n![gone](../x.png)\n"
    )
    pages = write_pages(out, [out / "ppl.csv", out / "published-dprope_table1.csv", out / "summary.md"])
    assert sorted(p.name for p in pages) == ["ppl.html", "published.html", "summary.html"]
    summary = (out / "summary.html").read_text()
    assert "<table>" in summary and "<code>c</code>" in summary and "<script>" not in summary
    assert 'src="data:image/png;base64,' in summary and 'src="../x.png"' in summary  # outside the folder: kept
    published = _Cells()
    published.feed((out / "published.html").read_text())
    assert "<b>a</b> & b" in published.cells and "dprope_table1" in (out / "published.html").read_text()
    assert "No published table" in published_page([])
