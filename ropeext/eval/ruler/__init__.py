"""RULER-style long-context suite, generated locally at any length.

Public entry points:
- ``generate.make_sample`` / ``generate.generate_samples``: seeded samples of the 13 tasks;
- ``tasks.load_templates``: the prompt wording by source (``ropeext``, or a templates file such as
  the user's copy of RULER's);
- ``metrics.string_match_all`` / ``string_match_part`` / ``effective_length``;
- ``run.evaluate`` / ``run.summarize``: the evaluation loop and the metrics JSON content;
- ``report.ruler_table``: variants x lengths table from several metrics JSONs;
  ``report.ruler_task_heatmaps``: one PNG per task, variants x lengths.
"""

from ropeext.eval.ruler.generate import Sources, generate_samples, make_sample
from ropeext.eval.ruler.metrics import RULER_THRESHOLD, effective_length, string_match_all, string_match_part
from ropeext.eval.ruler.report import ruler_table, ruler_task_heatmaps
from ropeext.eval.ruler.tasks import SUBSETS, TASK_NAMES, TASKS, resolve_tasks

__all__ = [
    "RULER_THRESHOLD",
    "SUBSETS",
    "Sources",
    "TASKS",
    "TASK_NAMES",
    "effective_length",
    "generate_samples",
    "make_sample",
    "resolve_tasks",
    "ruler_table",
    "ruler_task_heatmaps",
    "string_match_all",
    "string_match_part",
]
