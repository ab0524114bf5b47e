"""ropeext check: every check a config can pass before anything runs, all problems at once.

The same checks run at workflow start (``snakemake -n`` included); running them by hand first is
the way to see a broken ``--configfile`` with its file, line and column, which Snakemake reports
without either.
"""

from __future__ import annotations

from ropeext.checks import problems, selected_checks
from ropeext.config import deep_merge, read_config_file, resolve_config
from ropeext.errors import RopeextError

COMMAND = ("check",)
HELP = (
    "check a config before running anything: its keys and values, the files and folders it names; lists "
    "every problem at once (exit 2 on any)"
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        metavar="YAML",
        help="config file; repeat it to lay files over each other, later ones winning key by key, "
        "as `snakemake --configfile A B` does",
    )


def run(args) -> None:
    raw: dict = {}
    for path in args.config:
        raw = deep_merge(raw, read_config_file(path))
    source = " + ".join(args.config)
    config = resolve_config(raw, source=source)
    found = problems(config)
    if found:
        lines = "\n  - ".join(found)
        raise RopeextError(f"{source}: {len(found)} problem{'s' * (len(found) != 1)}:\n  - {lines}")
    ran = selected_checks(config)
    skipped = "" if config["check_paths"] else " (file checks skipped: check_paths is false)"
    print(f"ok: {source}: the schema and {len(ran)} checks passed{skipped}")
