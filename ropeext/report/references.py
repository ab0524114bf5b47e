"""Published tables beside the pipeline's own numbers, with what makes them comparable.

``load_references`` reads and validates ``config/reference_values.yaml`` (one entry per published
table: its columns, its rows with the setting each row was measured in, and the protocol a run must
share with it). ``beside_ours`` takes one of the report's tables (variants as rows) with the metrics
JSONs behind it and, for every published table of that benchmark, pairs each of our variants with
the rows whose setting it reproduces (model, method, target length, layout, training data, RoPE
base, ...). A pair is shown side by side only when our run followed the paper's protocol (the
benchmark's own data, its prompt templates, its task set, its few-shot counts); otherwise the report
says why not. Rows no variant reproduces are listed as not run in this config.

Everything here is a pure function of the reference file, the config and the metrics dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ropeext.errors import RopeextError
from ropeext.report.tables import markdown_table, parse_variant

BENCHMARKS = ("longbench-e", "longbench", "ruler", "openllm", "ppl", "disturbance")
SETTING_KEYS = ("model", "method", "target_length", "layout", "train_length", "corpus", "rope_theta",
                "interpolated_dims", "bins", "head_dim")
ROW_KEYS = ("label", "values", "note", "comparable", "reason")
TABLE_KEYS = ("id", "paper", "table", "benchmark", "metric", "note", "protocol", "setting", "columns", "rows",
              "comparable", "reason", "at_length")
PROTOCOL_KEYS = {"data": ("official",), "templates": ("official",), "tasks": ("all", "anchor_llama2", "synthetic"),
                 "shots": None}
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
BENCHMARK_NAMES = {"longbench-e": "LongBench-E", "longbench": "LongBench", "ruler": "RULER", "openllm": "Open LLM",
                   "ppl": "perplexity", "disturbance": "RoPE disturbance"}


# ----------------------------------------------------------------------------- the file
@dataclass(frozen=True)
class Row:
    label: str
    setting: dict
    values: dict            # column -> published value (None where the paper gives none)
    note: str | None = None
    reason: str | None = None  # why this row is never comparable (None: it may be)


@dataclass(frozen=True)
class Table:
    id: str
    paper: str              # short name, e.g. DPRoPE
    citation: str
    table: str
    benchmark: str
    metric: str
    columns: tuple
    rows: tuple
    protocol: dict
    note: str | None = None
    reason: str | None = None  # why this table is never comparable
    at_length: int | None = None

    @property
    def title(self) -> str:
        return f"{self.paper} {self.table}"


@dataclass(frozen=True)
class References:
    tables: tuple = ()
    claims: tuple = ()
    papers: dict = field(default_factory=dict)

    def of(self, benchmarks) -> list[Table]:
        return [t for t in self.tables if t.benchmark in benchmarks]


def load_references(path: str | Path | None) -> References:
    """The validated reference file; an empty one without a path."""
    if not path:
        return References()
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"reference values file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        from ropeext.config import describe_yaml_error

        raise RopeextError(describe_yaml_error(path, exc)) from None
    return parse_references(data, str(path))


def _known_names() -> tuple[set, set]:
    from ropeext.config import load_schema

    defs = load_schema()["$defs"]
    return set(defs["method"]["enum"]), set(defs["layout"]["enum"]) | {"noft"}


def parse_references(data, source: str = "reference values") -> References:
    """Validate the parsed YAML and build the tables; every error names the entry and the key."""
    if not isinstance(data, dict):
        raise RopeextError(f"{source}: expected a mapping with papers, tables and claims")
    unknown = set(data) - {"papers", "other_methods", "tables", "claims"}
    if unknown:
        raise RopeextError(f"{source}: unknown top-level key(s) {sorted(unknown)} (expected papers, other_methods, "
                           "tables, claims)")
    for key, kind in (("papers", dict), ("other_methods", list), ("tables", list), ("claims", list)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise RopeextError(f"{source}: {key}: expected a {'mapping' if kind is dict else 'list'}, got {data[key]!r}")
    papers = data.get("papers") or {}
    for key, p in papers.items():
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not isinstance(p.get("citation"), str):
            raise RopeextError(f"{source}: papers.{key}: expected a mapping with name and citation")
    methods, layouts = _known_names()
    methods |= set(data.get("other_methods") or [])
    tables, seen = [], set()
    for i, entry in enumerate(data.get("tables") or []):
        table = _parse_table(entry, f"{source}: tables[{i}]", papers, methods, layouts)
        if table.id in seen:
            raise RopeextError(f"{source}: tables[{i}]: id {table.id!r} is used twice")
        seen.add(table.id)
        tables.append(table)
    claims = []
    for i, c in enumerate(data.get("claims") or []):
        if not isinstance(c, dict) or set(c) != {"paper", "where", "statement"}:
            raise RopeextError(f"{source}: claims[{i}]: expected exactly paper, where and statement")
        if c["paper"] not in papers:
            raise RopeextError(f"{source}: claims[{i}]: paper {c['paper']!r} is not one of papers ({sorted(papers)})")
        claims.append(dict(c))
    return References(tuple(tables), tuple(claims), {k: dict(v) for k, v in papers.items()})


def _parse_table(entry, where: str, papers: dict, methods: set, layouts: set) -> Table:
    if not isinstance(entry, dict):
        raise RopeextError(f"{where}: expected a mapping")
    where = f"{where} ({entry['id']})" if "id" in entry else where
    missing = [k for k in ("id", "paper", "table", "benchmark", "metric", "columns", "rows") if k not in entry]
    if missing:
        raise RopeextError(f"{where}: lacks {missing}")
    unknown = set(entry) - set(TABLE_KEYS)
    if unknown:
        raise RopeextError(f"{where}: unknown key(s) {sorted(unknown)} (expected {', '.join(TABLE_KEYS)})")
    if entry["paper"] not in papers:
        raise RopeextError(f"{where}: paper {entry['paper']!r} is not one of papers ({sorted(papers)})")
    if entry["benchmark"] not in BENCHMARKS:
        raise RopeextError(f"{where}: benchmark {entry['benchmark']!r} is not one of {', '.join(BENCHMARKS)}")
    columns = entry["columns"]
    if not isinstance(columns, list) or not columns or len(set(map(str, columns))) != len(columns):
        raise RopeextError(f"{where}: columns must be a non-empty list of distinct names")
    protocol = entry.get("protocol") or {}
    for key, value in protocol.items():
        if key not in PROTOCOL_KEYS:
            raise RopeextError(f"{where}: protocol.{key}: unknown (expected {', '.join(PROTOCOL_KEYS)})")
        allowed = PROTOCOL_KEYS[key]
        if allowed is not None and value is not None and value not in allowed:
            raise RopeextError(f"{where}: protocol.{key}: {value!r} is not one of {', '.join(allowed)} or null")
        if key == "shots" and value is not None and not (
                isinstance(value, dict) and all(isinstance(n, int) and n >= 0 for n in value.values())):
            raise RopeextError(f"{where}: protocol.shots: expected null or a mapping task -> number of shots")
    comparable, reason = _comparable(entry, where)
    at_length = entry.get("at_length")
    if at_length is not None and (entry["benchmark"] != "ruler" or not isinstance(at_length, int)):
        raise RopeextError(f"{where}: at_length: only a RULER table takes it, as a length in tokens")
    common = _setting(entry.get("setting") or {}, f"{where}: setting", methods, layouts, allow_null=False)
    rows = []
    if not isinstance(entry["rows"], list) or not entry["rows"]:
        raise RopeextError(f"{where}: rows must be a non-empty list")
    for j, r in enumerate(entry["rows"]):
        rwhere = f"{where}: rows[{j}]" + (f" ({r['label']})" if isinstance(r, dict) and "label" in r else "")
        if not isinstance(r, dict) or "label" not in r or "values" not in r:
            raise RopeextError(f"{rwhere}: expected a mapping with label and values")
        own = {k: v for k, v in r.items() if k not in ROW_KEYS}
        setting = {**common, **_setting(own, rwhere, methods, layouts, allow_null=True)}
        setting = {k: v for k, v in setting.items() if v is not None}
        values = r["values"]
        if not isinstance(values, list) or len(values) != len(columns):
            raise RopeextError(f"{rwhere}: values: expected a list of {len(columns)} (one per column "
                               f"{', '.join(map(str, columns))}), got {values!r}")
        for v in values:
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise RopeextError(f"{rwhere}: values: {v!r} is not a number or null")
        row_ok, row_reason = _comparable(r, rwhere)
        rows.append(Row(str(r["label"]), setting, dict(zip(columns, values)), r.get("note"),
                        None if row_ok else row_reason))
    paper = papers[entry["paper"]]
    return Table(str(entry["id"]), paper["name"], paper["citation"], str(entry["table"]), entry["benchmark"],
                 str(entry["metric"]), tuple(columns), tuple(rows), dict(protocol), entry.get("note"),
                 None if comparable else reason, at_length)


def _comparable(entry: dict, where: str) -> tuple[bool, str | None]:
    ok = entry.get("comparable", True)
    if not isinstance(ok, bool):
        raise RopeextError(f"{where}: comparable: expected true or false, got {ok!r}")
    if not ok and not entry.get("reason"):
        raise RopeextError(f"{where}: comparable: false needs a reason")
    return ok, entry.get("reason")


def _setting(setting, where: str, methods: set, layouts: set, *, allow_null: bool) -> dict:
    if not isinstance(setting, dict):
        raise RopeextError(f"{where}: expected a mapping of setting keys")
    for key, value in setting.items():
        if key not in SETTING_KEYS:
            raise RopeextError(f"{where}: unknown key {key!r} (a row takes {', '.join(ROW_KEYS)} and the setting "
                               f"keys {', '.join(SETTING_KEYS)})")
        if value is None:
            if not allow_null:
                raise RopeextError(f"{where}: {key}: null is only allowed in a row (to drop a shared key)")
            continue
        if key == "method" and value not in methods:
            raise RopeextError(f"{where}: method {value!r} is not one of {', '.join(sorted(methods))} "
                               "(add a paper-only method to other_methods)")
        if key == "layout" and value not in layouts:
            raise RopeextError(f"{where}: layout {value!r} is not one of {', '.join(sorted(layouts))}")
        if key in ("target_length", "train_length", "interpolated_dims", "bins", "head_dim", "rope_theta") and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise RopeextError(f"{where}: {key}: expected a number, got {value!r}")
    return dict(setting)


# ----------------------------------------------------------------------------- matching
def _name(value) -> str:
    return str(value).rstrip("/").split("/")[-1].lower()


def run_setting(config: dict, variant: str) -> dict:
    """The setting of one of our variants, in the reference file's keys."""
    info = parse_variant(variant)
    rope, model = config["rope"], config["model"]
    method = info["method"]
    out = {"model": model.get("path") or model.get("name"), "method": method, "layout": info["layout"],
           "train_length": model["train_length"],
           "corpus": config["corpus"].get("path") or config["corpus"].get("source"),
           "rope_theta": rope.get("new_rope_theta") if method == "base_change" else model["architecture"]["rope_theta"]}
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
def _num(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _mean(values: list) -> float | None:
    """Mean of every value, None when any is missing."""
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 2) if vals and len(vals) == len(values) else None


def longbench_categories(metrics: dict) -> dict[str, float | None]:
    """Mean score of the run's tasks in each LongBench category (None where the run has none of them)."""
    tasks = metrics.get("tasks") or {}
    out = {}
    for cat, members in LONGBENCH_CATEGORIES.items():
        scores = [_num(tasks[t].get("score")) for t in members if t in tasks]
        scores = [s for s in scores if s is not None]
        out[cat] = round(sum(scores) / len(scores), 2) if scores else None
    return out


def our_values(table: Table, ours: pd.Series, metrics: dict) -> dict:
    """Our number for each of the table's columns (None where we have none)."""
    if table.at_length is not None:
        scores = metrics.get("scores") or {}
        return {c: _num((scores.get(c) or {}).get(str(table.at_length))) for c in table.columns}
    cats = longbench_categories(metrics) if table.benchmark.startswith("longbench") else {}
    out = {}
    for c in table.columns:
        if c in ours.index:
            out[c] = _num(ours[c])
        elif str(c) in ours.index:
            out[c] = _num(ours[str(c)])
        else:
            out[c] = cats.get(c)
    if table.benchmark in ("ruler", "openllm"):
        for c in table.columns:
            if str(c).lower() == "avg":
                out[c] = _mean([out[o] for o in table.columns if str(o).lower() != "avg"])
    return out


# ----------------------------------------------------------------------------- comparability
def _is_embedded(metrics: dict) -> list[str]:
    from ropeext.eval.longbench.protocol import LONGBENCH_TASKS

    return [t for t in (metrics.get("tasks") or {}) if t not in LONGBENCH_TASKS]


def _is_local(metrics: dict) -> bool:
    from ropeext.eval.openllm.presets import LOCAL_TASKS

    return metrics.get("preset") == "local" or any(t in LOCAL_TASKS for t in (metrics.get("tasks") or {}))


def data_reasons(table: Table, metrics: dict) -> list[str]:
    """Why our run's data can never be compared with the paper's (the project's own tasks)."""
    if table.benchmark.startswith("longbench"):
        own = _is_embedded(metrics)
        if own:
            return [f"embedded code task ({', '.join(own)}), the project's own data, not "
                    f"{BENCHMARK_NAMES[table.benchmark]} data"]
    if table.benchmark == "openllm" and _is_local(metrics):
        return ["local tasks built from the held-out split, the project's own data, not the paper's benchmarks"]
    return []


def protocol_reasons(table: Table, metrics: dict) -> list[str]:
    """Where our run departs from the paper's protocol (empty: comparable)."""
    reasons = []
    p = table.protocol
    if table.benchmark.startswith("longbench"):
        from ropeext.eval.longbench.protocol import LONGBENCH_E_TASKS, LONGBENCH_TASKS

        tasks = list(metrics.get("tasks") or {})
        if p.get("tasks") == "all":
            full = LONGBENCH_E_TASKS if table.benchmark == "longbench-e" else LONGBENCH_TASKS
            missing = [t for t in full if t not in tasks]
            if missing:
                reasons.append(f"{len(full) - len(missing)} of the {len(full)} {BENCHMARK_NAMES[table.benchmark]} "
                               f"tasks (missing {', '.join(missing)})")
        if metrics.get("limit"):
            reasons.append(f"at most {metrics['limit']} samples per task; the paper scores every sample")
        if metrics.get("engine") == "lm_eval":
            reasons.append("lm-eval's tasks cut a prompt longer than the window at its beginning, LongBench's "
                           "script in the middle")
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
                other = sorted(k for k, s in sources.items() if not str(s).startswith("lm-eval"))
                if other:
                    reasons.append(f"prompt wording of {', '.join(other)} is {sources[other[0]]!r}, not RULER's "
                                   "(eval.ruler.templates: official)")
        want = p.get("tasks")
        if want and table.at_length is None and metrics.get("subset") != want:
            from ropeext.eval.ruler.tasks import SUBSETS

            reasons.append(f"averages the task set {metrics.get('subset')!r}, the paper {want!r} "
                           f"({len(SUBSETS[want])} tasks)")
    elif table.benchmark == "openllm":
        shots = p.get("shots") or {}
        tasks = metrics.get("tasks") or {}
        for col in table.columns:
            if col in shots and col in tasks and tasks[col].get("num_fewshot") != shots[col]:
                reasons.append(f"{col} {tasks[col].get('num_fewshot')}-shot here, {shots[col]}-shot in the paper")
        if metrics.get("limit"):
            reasons.append(f"at most {metrics['limit']} samples per task (eval.openllm.limit)")
    return reasons


def protocol_text(table: Table) -> str:
    """The paper's protocol in words."""
    p, parts = table.protocol, []
    name = BENCHMARK_NAMES[table.benchmark]
    if p.get("data") == "official":
        parts.append(f"{name}'s own data")
    if p.get("templates") == "official":
        parts.append(f"{'RULER' if table.benchmark == 'ruler' else 'LongBench'}'s prompt templates")
    if "tasks" in p:
        parts.append(f"task set {p['tasks']}" if p["tasks"] else "task set not stated")
    if "shots" in p:
        parts.append(", ".join(f"{t} {n}-shot" for t, n in p["shots"].items()) if p["shots"]
                     else "few-shot counts not stated")
    return "; ".join(parts) or "not stated"


def describe_run(benchmark: str, metrics: dict, config: dict) -> str:
    """Which template source, data source and metric implementation produced one run's numbers."""
    if benchmark in ("longbench", "ruler") and metrics.get("engine") == "lm_eval":
        return _describe_lm_eval(benchmark, metrics)
    if benchmark == "longbench":
        return _describe_longbench(metrics) + "; engine: ropeext"
    if benchmark == "ruler":
        return _describe_ruler(metrics, config.get("eval", {}).get("ruler", {})) + "; engine: ropeext"
    if benchmark == "openllm":
        if _is_local(metrics):
            return ("the project's local tasks built from the held-out split (never comparable to a paper); "
                    "metric: lm-eval's")
        tasks = ", ".join(f"{t} {v.get('num_fewshot')}-shot" for t, v in (metrics.get("tasks") or {}).items())
        return f"lm-eval {metrics.get('lm_eval_version') or '?'} tasks: {tasks}; data and metric: lm-eval's"
    return ""


def _describe_longbench(metrics: dict) -> str:
    own = _is_embedded(metrics)
    if own:
        return (f"the embedded LongBench-E-style task {', '.join(own)}: the project's own prompt and held-out "
                "data (never comparable to a paper); metric code_sim as LongBench's scorer")
    sources = sorted({str(s) for s in (metrics.get("prompt_source") or {}).values()}) or ["not recorded"]
    diffs = sorted({t for t, d in (metrics.get("prompt_differences") or {}).items() if d})
    name = BENCHMARK_NAMES.get(metrics.get("benchmark"), metrics.get("benchmark"))
    text = f"{name}, {len(metrics.get('tasks') or {})} tasks; templates: {'; '.join(sources)}"
    if diffs:
        text += (f" (known differences from the official templates in {', '.join(diffs)}: metrics.json "
                 "prompt_differences)")
    return (f"{text}; data: {metrics.get('data_dir') or 'not recorded'}; metric: LongBench's scorer as "
            f"ropeext.eval.longbench.metrics ports it (code_sim: {metrics.get('code_sim_backend') or 'n/a'})")


def _describe_lm_eval(benchmark: str, metrics: dict) -> str:
    """A run of the ``lm_eval`` engine: lm-eval's own tasks, data and scoring."""
    version = metrics.get("lm_eval_version") or "?"
    tasks = ", ".join((metrics.get("lm_eval_tasks") or {}).values()) or "not recorded"
    if benchmark == "ruler":
        data = (f"data generated by lm-eval with the model's tokenizer, up to {metrics.get('samples_per_cell', '?')} "
                "samples per task and length")
        metric = "lm-eval's RULER string match"
    else:
        data = f"data {', '.join(sorted(set((metrics.get('data') or {}).values()))) or 'not recorded'}"
        diffs = sorted(t for t, d in (metrics.get("prompt_differences") or {}).items() if d)
        if diffs:
            data += (f"; prompts lm-eval's (known differences from the official templates in {', '.join(diffs)}: "
                     "metrics.json prompt_differences)")
        metric = "lm-eval's LongBench scorers"
        if metrics.get("buckets"):
            metric += ", bucketed by length as LongBench-E"
    return f"engine: lm_eval (lm-eval {version}'s own tasks {tasks}); {data}; metric: {metric}"


def _describe_ruler(metrics: dict, ruler: dict) -> str:
    sources = metrics.get("template_source") or {}
    templates = ", ".join(sorted({str(s).split(":")[0] for s in sources.values()})) or "not recorded"
    notes = metrics.get("template_notes") or []
    if notes:
        templates += f" ({len(notes)} notes on lm-eval vs RULER's scripts: metrics.json template_notes)"
    qa = ", ".join(f"{k} {ruler.get(k)}" for k in ("squad", "hotpotqa") if ruler.get(k)) or "none (qa tasks skipped)"
    haystack = ruler.get("essay_source") or "the held-out split of this corpus"
    return (f"templates: {templates}; data: tasks generated by ropeext, task set {metrics.get('subset')}, "
            f"{metrics.get('samples_per_cell', '?')} samples per task and length, haystack {haystack} "
            f"(RULER's: Paul Graham's essays), QA {qa}; metric: RULER's string match (ropeext.eval.ruler.metrics)")


# ----------------------------------------------------------------------------- comparison
@dataclass
class Comparison:
    table: Table
    shown: list = field(default_factory=list)      # (variant, Row, our values)
    blocked: list = field(default_factory=list)    # (variant, Row, reasons)

    def reproduced(self) -> set[str]:
        return {r.label for _, r, _ in self.shown} | {r.label for _, r, _ in self.blocked}

    def frame(self) -> pd.DataFrame:
        """Variants as rows: the paper's row, then each column ours and the paper's side by side."""
        records = []
        for variant, row, ours in self.shown:
            rec = {"variant": variant, "paper row": row.label}
            for c in self.table.columns:
                mine, paper = ours.get(c), _num(row.values.get(c))
                rec[str(c)] = math.nan if mine is None else mine
                rec[f"{c} (paper)"] = math.nan if paper is None else paper
            records.append(rec)
        cols = ["variant", "paper row"] + [x for c in self.table.columns for x in (str(c), f"{c} (paper)")]
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


def _tables_for(benchmark: str, refs: References) -> list[Table]:
    kinds = ("longbench-e", "longbench") if benchmark == "longbench" else (benchmark,)
    return refs.of(kinds)


@dataclass
class Beside:
    lines: list
    comparisons: list
    frames: dict  # file name -> DataFrame of a side-by-side comparison


def beside_ours(benchmark: str, ours: pd.DataFrame, metrics: list[dict], config: dict, refs: References,
                floatfmt: str = ".2f") -> Beside:
    """The lines a benchmark section of the report gains: what produced our numbers, and each
    published table of that benchmark beside ours where comparable, or why not."""
    by_variant = {m.get("variant"): m for m in metrics}
    described = {}
    for v in ours.index:
        described.setdefault(describe_run(benchmark, by_variant.get(v) or {}, config), []).append(v)
    lines = []
    if len(described) == 1:
        lines.append(f"Produced with: {next(iter(described))}.")
    else:
        lines.append("Produced with:")
        lines += [f"- {', '.join(f'`{v}`' for v in vs)}: {text}" for text, vs in described.items()]
    comparisons, frames = [], {}
    tables = _tables_for(benchmark, refs)
    if not tables:
        return Beside(lines, comparisons, frames)
    lines += ["", f"Published {BENCHMARK_NAMES[benchmark]} values, beside ours only where our run reproduces the "
                  "row's setting and follows the paper's protocol:", ""]
    untouched = []
    for table in tables:
        comp = compare_table(table, ours, by_variant, config)
        comparisons.append(comp)
        if not comp.shown and not comp.blocked:
            untouched.append(f"{table.title} ({len(table.rows)} rows)")
            continue
        lines += comparison_lines(comp, floatfmt)
        if comp.shown:
            frames[f"published-{table.id}.csv"] = comp.frame()
    if untouched:
        lines += [f"No variant of this config reproduces a row of {', '.join(untouched)}: not run in this config.", ""]
    return Beside(lines, comparisons, frames)


def comparison_lines(comp: Comparison, floatfmt: str = ".2f") -> list[str]:
    t = comp.table
    not_run = [r.label for r in t.rows if r.label not in comp.reproduced()]
    head = f"**{t.title}** ({t.metric})"
    lines = [head + (f". Note: {t.note}" if t.note else "") + f". The paper's protocol: {protocol_text(t)}.", ""]
    if comp.shown:
        lines += [markdown_table(comp.frame(), floatfmt), ""]
        notes = [f"{r.label}: {r.note}" for _, r, _ in comp.shown if r.note]
        lines += [f"Note: {n}" for n in dict.fromkeys(notes)] + ([""] if notes else [])
    for variant, row, reasons in comp.blocked:
        lines.append(f"- `{variant}` beside \"{row.label}\": not comparable: {'; '.join(reasons)}.")
    if not_run:
        lines.append(f"- Not run in this config: {'; '.join(not_run)}.")
    return lines + [""]


def disturbance_beside(table: pd.DataFrame, geometry: dict, refs: References) -> tuple[pd.DataFrame, list]:
    """The `ropeext compare` table with a '<column> (paper)' column per published disturbance value whose
    geometry (base, head dimension, L, L') is ours; the method is matched row by row."""
    comparisons = []
    for ref in refs.of(("disturbance",)):
        comp = Comparison(ref)
        for row in ref.rows:
            geo = {k: v for k, v in row.setting.items() if k != "method"}
            method = row.setting.get("method")
            if not row_matches(geo, geometry) or method not in set(table["method"]):
                continue
            for c in ref.columns:
                col = f"{c} (paper)"
                if col not in table.columns:
                    table[col] = float("nan")
                table.loc[table["method"] == method, col] = row.values.get(c)
            ours = table.loc[table["method"] == method].iloc[0]
            comp.shown.append((f"{method}-{geometry.get('target_length')}", row,
                               {c: _num(ours.get(c)) for c in ref.columns}))
        comparisons.append(comp)
    return table, comparisons


def summary_lines(refs: References, comparisons: list[Comparison]) -> list[str]:
    """The report's closing section: every published table, what of it stands beside ours, and the claims."""
    by_id: dict[str, Comparison] = {}
    for comp in comparisons:
        seen = by_id.setdefault(comp.table.id, Comparison(comp.table))
        seen.shown += comp.shown
        seen.blocked += comp.blocked
    lines = ["Published values from the reference file (`report.references`); a value stands beside ours only "
             "where our run reproduces the row's setting (model, method, target length, layout, training data, "
             "RoPE base) and follows the paper's protocol (data, prompt templates, task set, shots).", ""]
    lines += [f"- {p['name']}: {p['citation']}" for p in refs.papers.values()] + [""]
    for t in refs.tables:
        comp = by_id.get(t.id, Comparison(t))
        if t.reason:
            lines.append(f"- {t.title} ({BENCHMARK_NAMES[t.benchmark]}): never shown beside ours: {t.reason}.")
            continue
        shown = sorted({r.label for _, r, _ in comp.shown})
        blocked = sorted({r.label for _, r, _ in comp.blocked})
        not_run = len(t.rows) - len(comp.reproduced())
        parts = []
        if shown:
            parts.append(f"beside ours: {'; '.join(shown)}")
        if blocked:
            parts.append(f"reproduced but not comparable: {'; '.join(blocked)}")
        parts.append(f"not run in this config: {not_run} of {len(t.rows)} rows")
        lines.append(f"- {t.title} ({BENCHMARK_NAMES[t.benchmark]}): {'; '.join(parts)}.")
    if refs.claims:
        lines += ["", "Stated in the papers (not per-run numbers):", ""]
        lines += [f"- {refs.papers[c['paper']]['name']} ({c['where']}): {c['statement']}" for c in refs.claims]
    return lines
