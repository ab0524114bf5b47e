"""Open LLM tasks through lm-eval: presets, offline task folders built from held-out text, the run, the table.

- ``presets``: the task lists (``dprope_paper``, ``leaderboard_v1``, ``local``) and the headline metric per task;
- ``local_tasks``: writes lm-eval task YAMLs (``dataset_path: json`` with absolute ``data_files``) and their data;
- ``runner``: ``simple_evaluate`` with ``HFLM`` over a model directory, one task entry at a time, resumable;
- ``report``: the metrics JSON and ``summary_table`` (variants as rows).
"""

from ropeext.eval.openllm.presets import PRESETS, resolve_tasks
from ropeext.eval.openllm.report import build_metrics, summary_table

__all__ = ["PRESETS", "resolve_tasks", "build_metrics", "summary_table"]
