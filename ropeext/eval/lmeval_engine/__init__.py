"""The ``lm_eval`` engine of RULER and LongBench: lm-eval's own tasks through the Open LLM suite's HFLM.

``eval.ruler.engine`` / ``eval.longbench.engine`` choose between this project's implementation
(``ropeext``: offline, seeded, data generated or read locally) and lm-eval's own tasks (``lm_eval``:
the harness's exact tasks, data fetched or read from the local caches). Both write the suite's usual
metrics.json, marked with its ``engine``.

- ``ruler`` / ``longbench``: the runs, their metrics JSON, and ``problems(settings)``: lm-eval asked to
  load what the chosen tasks need, each failure explained (the workflow-start check, and each run's first step);
- ``common``: lm-eval's task folder, resumable state, stored samples.
"""

from ropeext.eval.lmeval_engine import longbench, ruler

CHECKS = {"ruler": ruler.problems, "longbench": longbench.problems}


def engine_problems(config: dict) -> list[str]:
    """One message per enabled suite set to ``engine: lm_eval`` whose tasks cannot load what they need here:
    what lm-eval said and how to get it. Empty when every such suite can run (or none is set)."""
    out: list[str] = []
    for suite, problems in CHECKS.items():
        section = config.get("eval", {}).get(suite, {})
        if section.get("enabled", True) and section.get("engine") == "lm_eval":
            out += problems(section)
    return out


__all__ = ["engine_problems"]
