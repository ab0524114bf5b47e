"""Our side of a published table: the setting each variant reproduces, our numbers in the table's
columns, and why a run's numbers cannot stand beside the paper's (data, protocol).

Everything here is a pure function of a table, the config and the metrics dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is heavy; the light paths (CLI help, workflow parse) import this module
    import pandas as pd

from ropeext.eval.longbench.protocol import LONGBENCH_E_TASKS, LONGBENCH_TASKS
from ropeext.eval.openllm.presets import LOCAL_TASKS
from ropeext.eval.ruler.tasks import SUBSETS
from ropeext.report.references.load import BENCHMARK_NAMES, Table
from ropeext.report.tables import parse_variant
from ropeext.text import number

NAME_KEYS = ("model", "corpus")  # compared by their last path component, case-insensitive
# LongBench's task categories (its paper's grouping); a category score is the mean of the run's tasks in it.
LONGBENCH_CATEGORIES = {
    "single_doc_qa": ("narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh"),
    "multi_doc_qa": ("hotpotqa", "2wikimqa", "musique", "dureader"),
    "summarization": ("gov_report", "qmsum", "multi_news", "vcsum"),
    "icl": ("trec", "triviaqa", "samsum", "lsht"),
    "synthetic": ("passage_count", "passage_retrieval_en", "passage_retrieval_zh"),
    "code": ("lcc", "repobench-p"),
}


# ----------------------------------------------------------------------------- matching
def _name(value) -> str:
    return str(value).rstrip("/").split("/")[-1].lower()


def run_setting(config: dict, variant: str) -> dict:
    """The setting of one of our variants, in the reference file's keys."""
    info = parse_variant(variant)
    rope, model = config["rope"], config["model"]
    method = info["method"]
    out = {
        "model": model.get("path") or model.get("name"),
        "method": method,
        "layout": info["layout"],
        "train_length": model["train_length"],
        "corpus": config["corpus"].get("path") or config["corpus"].get("source"),
        "rope_theta": rope.get("new_rope_theta") if method == "base_change" else model["architecture"]["rope_theta"],
    }
    if str(info["target"]).isdigit():
        out["target_length"] = int(info["target"])
    if method == "dprope":
        dims = rope.get("interpolated_dims")
        if isinstance(dims, dict):
            dims = dims.get(out.get("target_length"), dims.get(str(out.get("target_length"))))
        out["interpolated_dims"] = dims
        out["bins"] = rope.get("bins")
    return out


def row_matches(setting: dict, ours: dict) -> bool:
    """Every key of the row's setting equals ours (names by last path component, numbers as floats)."""
    for key, want in setting.items():
        have = ours.get(key)
        if have is None:
            return False
        if key in NAME_KEYS:
            if _name(want) != _name(have):
                return False
        elif isinstance(want, (int, float)) and isinstance(have, (int, float)):
            if abs(float(want) - float(have)) > 1e-9 * max(1.0, abs(float(want))):
                return False
        elif want != have:
            return False
    return True


# ----------------------------------------------------------------------------- our numbers
def _mean(values: list) -> float | None:
    """Mean of every value, None when any is missing."""
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 2) if vals and len(vals) == len(values) else None


def longbench_categories(metrics: dict) -> dict[str, float | None]:
    """Mean score of the run's tasks in each LongBench category (None where the run has none of them)."""
    tasks = metrics.get("tasks") or {}
    out = {}
    for cat, members in LONGBENCH_CATEGORIES.items():
        scores = [number(tasks[t].get("score")) for t in members if t in tasks]
        scores = [s for s in scores if s is not None]
        out[cat] = round(sum(scores) / len(scores), 2) if scores else None
    return out


def our_values(table: Table, ours: pd.Series, metrics: dict) -> dict:
    """Our number for each of the table's columns (None where we have none)."""
    if table.at_length is not None:
        scores = metrics.get("scores") or {}
        return {c: number((scores.get(c) or {}).get(str(table.at_length))) for c in table.columns}
    cats = longbench_categories(metrics) if table.benchmark.startswith("longbench") else {}
    out = {}
    for c in table.columns:
        if c in ours.index:
            out[c] = number(ours[c])
        elif str(c) in ours.index:
            out[c] = number(ours[str(c)])
        else:
            out[c] = cats.get(c)
    if table.benchmark in ("ruler", "openllm"):
        for c in table.columns:
            if str(c).lower() == "avg":
                out[c] = _mean([out[o] for o in table.columns if str(o).lower() != "avg"])
    return out


# ----------------------------------------------------------------------------- comparability
def embedded_tasks(metrics: dict) -> list[str]:
    return [t for t in (metrics.get("tasks") or {}) if t not in LONGBENCH_TASKS]


def is_local_tasks(metrics: dict) -> bool:
    return metrics.get("preset") == "local" or any(t in LOCAL_TASKS for t in (metrics.get("tasks") or {}))


def data_reasons(table: Table, metrics: dict) -> list[str]:
    """Why our run's data can never be compared with the paper's (the project's own tasks)."""
    if table.benchmark.startswith("longbench"):
        own = embedded_tasks(metrics)
        if own:
            return [
                f"embedded code task ({', '.join(own)}), the project's own data, not "
                f"{BENCHMARK_NAMES[table.benchmark]} data"
            ]
    if table.benchmark == "openllm" and is_local_tasks(metrics):
        return ["local tasks built from the held-out split, the project's own data, not the paper's benchmarks"]
    return []


def protocol_reasons(table: Table, metrics: dict) -> list[str]:
    """Where our run departs from the paper's protocol (empty: comparable)."""
    reasons = []
    p = table.protocol
    if table.benchmark.startswith("longbench"):
        tasks = list(metrics.get("tasks") or {})
        if p.get("tasks") == "all":
            full = LONGBENCH_E_TASKS if table.benchmark == "longbench-e" else LONGBENCH_TASKS
            missing = [t for t in full if t not in tasks]
            if missing:
                reasons.append(
                    f"{len(full) - len(missing)} of the {len(full)} {BENCHMARK_NAMES[table.benchmark]} "
                    f"tasks (missing {', '.join(missing)})"
                )
        if metrics.get("limit"):
            reasons.append(f"at most {metrics['limit']} samples per task; the paper scores every sample")
        if metrics.get("engine") == "lm_eval":
            reasons.append(
                "lm-eval's tasks cut a prompt longer than the window at its beginning, LongBench's script in the middle"
            )
        if p.get("templates") == "official":
            sources = metrics.get("prompt_source")
            if not sources:
                reasons.append("metrics.json does not record where the prompts came from (prompt_source)")
            else:
                own = sorted(t for t, s in sources.items() if str(s).startswith("ropeext"))
                if own:
                    reasons.append(f"prompts of {', '.join(own)} are the project's own, not LongBench's")
    elif table.benchmark == "ruler":
        if p.get("templates") == "official":
            sources = metrics.get("template_source")
            if not sources:
                reasons.append("metrics.json does not record the prompt wording (template_source)")
            else:
                own = sorted(k for k, s in sources.items() if str(s).startswith("ropeext"))
                if own:
                    reasons.append(
                        f"prompt wording of {', '.join(own)} is the project's own, not RULER's (give "
                        "RULER's in a templates file, eval.ruler.templates, or use eval.ruler.engine: lm_eval)"
                    )
        want = p.get("tasks")
        if want and table.at_length is None and metrics.get("subset") != want:
            reasons.append(
                f"averages the task set {metrics.get('subset')!r}, the paper {want!r} ({len(SUBSETS[want])} tasks)"
            )
    elif table.benchmark == "openllm":
        shots = p.get("shots") or {}
        tasks = metrics.get("tasks") or {}
        for col in table.columns:
            if col in shots and col in tasks and tasks[col].get("num_fewshot") != shots[col]:
                reasons.append(f"{col} {tasks[col].get('num_fewshot')}-shot here, {shots[col]}-shot in the paper")
        if metrics.get("limit"):
            reasons.append(f"at most {metrics['limit']} samples per task (eval.openllm.limit)")
    return reasons


# ----------------------------------------------------------------------------- comparison
@dataclass
class Comparison:
    table: Table
    shown: list = field(default_factory=list)  # (variant, Row, our values)
    blocked: list = field(default_factory=list)  # (variant, Row, reasons)

    def reproduced(self) -> set[str]:
        return {r.label for _, r, _ in self.shown} | {r.label for _, r, _ in self.blocked}

    def frame(self) -> pd.DataFrame:
        """Variants as rows: the paper's row, then each column ours and the paper's side by side."""
        records = []
        for variant, row, ours in self.shown:
            rec = {"variant": variant, "paper row": row.label}
            for c in self.table.columns:
                mine, paper = ours.get(c), number(row.values.get(c))
                rec[str(c)] = math.nan if mine is None else mine
                rec[f"{c} (paper)"] = math.nan if paper is None else paper
            records.append(rec)
        cols = ["variant", "paper row"] + [x for c in self.table.columns for x in (str(c), f"{c} (paper)")]
        import pandas as pd  # heavy: loads only when a comparison is tabled

        return pd.DataFrame(records, columns=cols).set_index("variant")


def _same_benchmark(table: Table, metrics: dict) -> bool:
    if table.benchmark.startswith("longbench"):
        return metrics.get("benchmark") == table.benchmark
    return True


def compare_table(table: Table, ours: pd.DataFrame, metrics: dict[str, dict], config: dict) -> Comparison:
    """Pair our variants with the rows of one published table whose setting they reproduce."""
    comp = Comparison(table)
    for variant in ours.index:
        m = metrics.get(variant) or {}
        if not _same_benchmark(table, m):
            continue
        setting = run_setting(config, variant)
        for row in table.rows:
            if not row_matches(row.setting, setting):
                continue
            foreign = data_reasons(table, m)
            if foreign:
                comp.blocked.append((variant, row, foreign))
                continue
            values = our_values(table, ours.loc[variant], m)
            if not any(values[c] is not None and row.values.get(c) is not None for c in table.columns):
                continue  # matched setting, but nothing of this table measured
            reasons = [r for r in (table.reason, row.reason) if r] + protocol_reasons(table, m)
            (comp.blocked if reasons else comp.shown).append((variant, row, reasons if reasons else values))
    return comp
