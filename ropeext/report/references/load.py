"""The reference file (``config/reference_values.yaml``): read, validated against its JSON Schema
(``ropeext/reference_values.schema.yaml``) and the names it refers to, and turned into tables."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ropeext.config import describe_yaml_error, load_schema, section_properties
from ropeext.errors import RopeextError

# package data, as config.schema.yaml
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "reference_values.schema.yaml"
# what ``report.references: null`` names: the published values shipped with the repository (config/)
REPOSITORY_REFERENCES = Path(__file__).resolve().parents[2] / "reference_values.yaml"
ROW_KEYS = ("label", "values", "note", "comparable", "reason")  # a row's other keys are its setting
BENCHMARK_NAMES = {
    "longbench-e": "LongBench-E",
    "longbench": "LongBench",
    "ruler": "RULER",
    "openllm": "Open LLM",
    "ppl": "perplexity",
    "disturbance": "RoPE disturbance",
}


@dataclass(frozen=True)
class Row:
    label: str
    setting: dict
    values: dict  # column -> published value (None where the paper gives none)
    note: str | None = None
    reason: str | None = None  # why this row is never comparable (None: it may be)


@dataclass(frozen=True)
class Table:
    id: str
    paper: str  # short name, e.g. DPRoPE
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
    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"reference values file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RopeextError(describe_yaml_error(path, exc)) from None
    return parse_references(data, str(path))


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def parse_references(data, source: str = "reference values") -> References:
    """Validate the parsed YAML and build the tables; every error names the entry and the key."""
    schema = _schema()
    from jsonschema import Draft202012Validator  # heavy (its referencing stack): loads only when a file is validated

    errors = sorted(Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    problems = [f"{_where(data, e.absolute_path)}{_describe(e, schema)}" for e in errors] or _name_problems(data)
    if problems:
        raise RopeextError(f"{source}: " + f"\n{source}: ".join(problems))
    papers = data.get("papers") or {}
    return References(
        tuple(_table(t, papers) for t in data.get("tables") or []),
        tuple(dict(c) for c in data.get("claims") or []),
        {k: dict(v) for k, v in papers.items()},
    )


def _where(data, path) -> str:
    """``tables[0] (id): protocol.tasks: `` for a path into the file: list items by index and id or label."""
    text, node, after_key = "", data, False
    for key in path:
        node = node[key]
        if isinstance(key, int):
            name = node.get("id", node.get("label")) if isinstance(node, dict) else None
            text += f"[{key}]" + (f" ({name})" if name is not None else "")
        else:
            text += ("." if after_key else (": " if text else "")) + str(key)
        after_key = not isinstance(key, int)
    return f"{text}: " if text else ""


def _describe(error, schema: dict) -> str:
    """The validator's message, with the keys a mapping takes or the schema's description of what is expected."""
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = ", ".join(section_properties(error.schema, schema))
        return f"{error.message.replace('Unevaluated', 'Additional')} (expected {allowed})"
    return error.message + (f" ({error.schema['description']})" if "description" in error.schema else "")


def _name_problems(data: dict) -> list[str]:
    """What the schema cannot check: names of papers, methods and layouts, unique ids, one value per column."""
    papers = data.get("papers") or {}
    config_defs = load_schema()["$defs"]
    methods = set(config_defs["method"]["enum"]) | set(data.get("other_methods") or [])
    layouts = set(config_defs["layout"]["enum"]) | {"noft"}
    problems, seen = [], set()
    for i, t in enumerate(data.get("tables") or []):
        where = f"tables[{i}] ({t['id']})"
        if t["paper"] not in papers:
            problems.append(f"{where}: paper {t['paper']!r} is not one of papers ({sorted(papers)})")
        if t["id"] in seen:
            problems.append(f"{where}: id {t['id']!r} is used twice")
        seen.add(t["id"])
        problems += [
            f"{where}: setting: {k}: null is only allowed in a row (to drop a shared key)"
            for k, v in (t.get("setting") or {}).items()
            if v is None
        ]
        settings = [(f"{where}: setting", t.get("setting") or {})]
        for j, r in enumerate(t["rows"]):
            settings.append((f"{where}: rows[{j}] ({r['label']})", r))
            if len(r["values"]) != len(t["columns"]):
                problems.append(
                    f"{settings[-1][0]}: values: expected a list of {len(t['columns'])} (one per column "
                    f"{', '.join(map(str, t['columns']))}), got {r['values']!r}"
                )
        for at, s in settings:
            if s.get("method") is not None and s["method"] not in methods:
                problems.append(
                    f"{at}: method {s['method']!r} is not one of {', '.join(sorted(methods))} "
                    "(add a paper-only method to other_methods)"
                )
            if s.get("layout") is not None and s["layout"] not in layouts:
                problems.append(f"{at}: layout {s['layout']!r} is not one of {', '.join(sorted(layouts))}")
    problems += [
        f"claims[{i}]: paper {c['paper']!r} is not one of papers ({sorted(papers)})"
        for i, c in enumerate(data.get("claims") or [])
        if c["paper"] not in papers
    ]
    return problems


def _table(entry: dict, papers: dict) -> Table:
    common, rows = entry.get("setting") or {}, []
    for r in entry["rows"]:
        setting = {**common, **{k: v for k, v in r.items() if k not in ROW_KEYS}}
        rows.append(
            Row(
                str(r["label"]),
                {k: v for k, v in setting.items() if v is not None},
                dict(zip(entry["columns"], r["values"])),
                r.get("note"),
                None if r.get("comparable", True) else r["reason"],
            )
        )
    paper = papers[entry["paper"]]
    return Table(
        str(entry["id"]),
        paper["name"],
        paper["citation"],
        str(entry["table"]),
        entry["benchmark"],
        str(entry["metric"]),
        tuple(entry["columns"]),
        tuple(rows),
        dict(entry.get("protocol") or {}),
        entry.get("note"),
        None if entry.get("comparable", True) else entry["reason"],
        entry.get("at_length"),
    )
