"""The pipeline's report: tables in the papers' shape (variants as rows), CSV, PNG, markdown and HTML pages."""

from __future__ import annotations

from pathlib import Path

from ropeext.report.document import Report
from ropeext.report.html import write_pages
from ropeext.report.references import REPOSITORY_REFERENCES  # noqa: F401 (the report's default, re-exported)


def build_report(config: dict, inputs: dict[str, list], out: Path) -> list[Path]:
    """Write summary.md plus a CSV per table and the plots, and their HTML pages (``ropeext.report.html``:
    ``<table>.html`` per CSV, ``published.html``, ``summary.html``); return the written files.

    ``inputs`` holds lists of the stages' files by kind (each evaluation suite's name, see
    ``ropeext.suites``; compare, angles), ``references`` (the published values file), ``base_model``
    (the base model's import_manifest.json or pre-training training_summary.json), ``training`` (the
    fine-tuned variants' training_summary.json files, each in its model directory, named by the variant)
    and ``warnings`` (the folder of the jobs' warning records, ropeext.job_warnings; None: no Warnings section)."""
    written = Report(config, inputs, out).write()
    return written + write_pages(out, written)
