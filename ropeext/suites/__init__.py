"""The evaluation suites: one module each in this package, found by name (docs/adding-an-evaluation.md).

A suite module declares ``SUITE = Suite(...)``: its name (the report's ``--<name>`` option and
``<name>.csv``), its config section, the workflow rule that evaluates one variant (the rule's inputs
and command), the file that rule writes per variant, and the function that writes its report section.
The workflow (workflow/rules/evaluations.smk and report.smk), ``ropeext report`` and the report
document read ``SUITES``; nothing else lists the suites. A module may also carry its own
``ropeext`` subcommand (``COMMAND``, ``HELP``, ``add_arguments``, ``run``, as in ``ropeext.commands``).
"""

from __future__ import annotations

import importlib
import pkgutil

from ropeext.errors import RopeextError
from ropeext.suites._suite import Suite


def _discover() -> tuple[list[Suite], list]:
    suites, modules = [], []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        modules.append(module)
        if not isinstance(getattr(module, "SUITE", None), Suite):
            raise RopeextError(
                f"{module.__file__}: an evaluation suite module must declare SUITE = ropeext.suites._suite.Suite(...)"
            )
        suites.append(module.SUITE)
    return sorted(suites, key=lambda s: (s.order, s.name)), modules


SUITES, MODULES = _discover()
