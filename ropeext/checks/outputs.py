"""Checks of packing, the results folder and the report's published values."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator

from ropeext.checks.registry import check
from ropeext.data.packing import INTERLEAVED, TAGGED, check_interleave, check_window, render_tag
from ropeext.errors import RopeextError
from ropeext.io import output_problem
from ropeext.report.references import REPOSITORY_REFERENCES, load_references


@check(
    "packing",
    "a window the workflow packs (model.train_length when it pre-trains, each extension.target_lengths) too "
    "short for the anchor and 2 tokens; interleave settings that cannot cut the documents they name; a tag "
    "template the anchor_tag layout cannot render",
)
def _packing(config: dict) -> Iterator[str]:
    layouts = config["extension"]["layouts"]
    p = config["packing"]
    windows = {"extension.target_lengths": config["extension"]["target_lengths"]}
    if not config["model"]["path"]:  # pre-training packs windows of the pre-training length
        windows["model.train_length"] = [config["model"]["train_length"]]
    for key, values in windows.items():
        for window in values:
            try:
                check_window(window)
            except RopeextError:
                yield (
                    f"{key}: {window} is a window the pack stage cuts; packing needs more than 2 tokens "
                    "(the anchor and at least 2 more)"
                )
    if any(layout in INTERLEAVED for layout in layouts):
        try:
            check_interleave(p["interleave"])
        except RopeextError as exc:
            yield str(exc)
    if any(layout in TAGGED for layout in layouts):
        try:
            render_tag(p["tag_template"], "domain")
        except RopeextError as exc:
            yield str(exc)


@check("results_dir", "a results folder that is a file, lies under a file or cannot be written", paths=True)
def _results_dir(config: dict) -> Iterator[str]:
    problem = output_problem(config["results_dir"], "folder")
    if problem:
        yield f"results_dir: {problem}"


@check("report.references", "a published-values file that is missing or does not load", paths=True)
def _references(config: dict) -> Iterator[str]:
    path = Path(config["report"]["references"] or REPOSITORY_REFERENCES)
    try:
        stat = path.stat()
    except OSError:
        stat = None
    try:
        _loads(load_references, str(path), stat and (stat.st_mtime_ns, stat.st_size))
    except RopeextError as exc:
        yield f"report.references: {exc}"


@functools.lru_cache(maxsize=8)
def _loads(load, path: str, version) -> bool:
    """``load(path)`` once per version (modification time and size) of the file: it loads or raises."""
    load(path)
    return True
