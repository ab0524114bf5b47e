"""Every check of a resolved config that needs only the config and the file system.

The schema (``ropeext.config``) checks each value on its own; the checks here look at values
together, and at the files and folders they name, so that a config which would stop a job hours
into a run stops before any job runs. ``problems(config)`` runs them all and returns every problem
found, each naming the key (and the file) and what was expected. The workflow calls it at start
(``workflow/rules/common.smk``) and ``ropeext check --config FILE`` prints it.

Each check is a small function registered with ``@check`` (``registry``) in ``CHECKS``, in the order
they run: those of the training sections (``training``), RoPE (``rope``), the corpus and models read
(``sources``), the evaluation suites (``evals``), then packing, outputs and the report (``outputs``).
Checks marked ``paths`` read the file system (never write to it); they run while the config's
``check_paths`` is true, so the jobs of a config meant for another machine can still be listed.
"""

from ropeext.checks import evals, outputs, rope, sources, training  # noqa: F401 - each registers its checks
from ropeext.checks.registry import CHECKS, Check, check, problems, raise_problems, selected_checks
from ropeext.checks.training import TRAINING, check_training

_ORDER = [module.__name__ for module in (training, rope, sources, evals, outputs)]  # the order they run in
CHECKS.sort(key=lambda c: _ORDER.index(c.run.__module__))

__all__ = ["CHECKS", "TRAINING", "Check", "check", "problems", "raise_problems", "selected_checks", "check_training"]
