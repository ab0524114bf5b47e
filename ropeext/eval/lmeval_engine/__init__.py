"""The ``lm_eval`` engine of RULER and LongBench: lm-eval's own tasks through the Open LLM suite's HFLM.

``eval.ruler.engine`` / ``eval.longbench.engine`` choose between this project's implementation
(``ropeext``: offline, seeded, data generated or read locally) and lm-eval's own tasks (``lm_eval``:
the harness's exact tasks, data fetched or read from the local caches). Both write the suite's usual
metrics.json, marked with its ``engine``.

- ``needs``: what lm-eval's tasks fetch and whether it is here; ``engine_problems(config)`` (the
  workflow-start check) and the per-suite checks each run calls first;
- ``ruler`` / ``longbench``: the runs and their metrics JSON;
- ``common``: lm-eval's task folder, resumable state, stored samples.
"""

from ropeext.eval.lmeval_engine.needs import ENGINES, engine_problems, longbench_problems, ruler_problems

__all__ = ["ENGINES", "engine_problems", "longbench_problems", "ruler_problems"]
