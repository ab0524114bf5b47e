"""Published tables beside ours: the reference file, matching by setting, comparability, the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ropeext.config import load_config
from ropeext.errors import RopeextError
from ropeext.report import references as R
from ropeext.report.summary import build_report
from tests.conftest import REPO

REFS = REPO / "config" / "reference_values.yaml"


@pytest.fixture(scope="module")
def refs():
    return R.load_references(REFS)


def _table(refs, table_id):
    return next(t for t in refs.tables if t.id == table_id)


# ----------------------------------------------------------------------------- metrics fixtures
def _longbench_metrics(variant: str, *, prompt_source: str = "data/LongBench/config", tasks=None) -> dict:
    """A LongBench-E metrics.json as `ropeext eval longbench` writes it (built by the same function)."""
    from ropeext.eval.longbench import protocol, results

    tasks = tasks or protocol.LONGBENCH_E_TASKS
    per_task = {}
    for i, task in enumerate(tasks):
        right, wrong = {"passage_retrieval_en": ("Paragraph 3", "Paragraph 1"), "passage_count": ("3", "1")}.get(
            task, ("paris", "rome")
        )
        # right in the first bucket, right or wrong by task in the second, wrong in the third
        recs = [
            {"pred": p, "answers": [right], "all_classes": ["paris", "rome"], "length": n}
            for p, n in ((right, 1000), (right if i % 2 else wrong, 5000), (wrong, 9000))
        ]
        per_task[task] = (recs, results.STANDARD_BUCKETS)
    return results.build_metrics(
        per_task,
        benchmark="longbench-e",
        variant=variant,
        model="m",
        window=16384,
        prompt_source={t: prompt_source for t in tasks},
        limit=None,
        code_sim_backend="difflib",
        data_dir="data/LongBench/data",
    )


def _embedded_metrics(variant: str) -> dict:
    from ropeext.eval.longbench import protocol, results

    recs = [{"pred": "x = 1", "answers": ["x = 1"], "length": n} for n in (100, 300, 700)]
    return results.build_metrics(
        {protocol.EMBEDDED_TASK: (recs, results.edge_buckets([64, 200, 456, 968]))},
        benchmark="longbench-e",
        variant=variant,
        model="m",
        window=1024,
        prompt_source={protocol.EMBEDDED_TASK: "ropeext (embedded task)"},
        limit=None,
        data_dir="results/x",
    )


def _ruler_metrics(variant: str, *, templates: str | None = None, drop_qa: bool = False) -> dict:
    """A RULER metrics.json as `ropeext eval ruler` writes it (its summary function, its templates; None: a
    templates file giving every kind's template, as the user's copy of RULER's wording does)."""
    import tempfile

    from ropeext.eval.ruler.run import summarize
    from ropeext.eval.ruler.tasks import ROPEEXT_TEMPLATES, load_templates, resolve_tasks

    if templates is None:
        templates = Path(tempfile.mkdtemp()) / "ruler_templates.yaml"
        templates.write_text(yaml.safe_dump({k: {"template": v["template"]} for k, v in ROPEEXT_TEMPLATES.items()}))

    tasks, subset = resolve_tasks(None, "anchor_llama2")
    if drop_qa:
        tasks = [t for t in tasks if not t.startswith("qa_")]
        subset += " without qa_1, qa_2"
    lengths = [4096, 8192, 16384, 32768, 65536]
    records = [
        {"task": t, "length": L, "score": ((i * 7 + j * 3) % 10) / 10}
        for i, t in enumerate(tasks)
        for j, L in enumerate(lengths)
    ]
    out = summarize(records, tasks=tasks, lengths=lengths, subset=subset, templates=load_templates(templates))
    return {"variant": variant, "model": "m", "window": 65536, "seed": 0, "samples_per_cell": 500, **out}


def _write(folder: Path, suite: str, metrics: dict) -> Path:
    path = folder / suite / metrics["variant"] / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return path


# ----------------------------------------------------------------------------- the file
def _mean(xs):
    return sum(xs) / len(xs)


def test_reference_file_loads_and_its_averages_agree_with_their_parts(refs):
    """Every derived column the papers print equals the mean of its parts (to the printed rounding):
    a transcription slip in any of these numbers fails here."""
    ids = {t.id for t in refs.tables}
    assert {
        "dprope-table1",
        "dprope-table2",
        "dprope-table4",
        "dprope-table6",
        "dprope-table8",
        "anchor-table5-sp64k",
        "anchor-table5-sp128k",
        "anchor-table5-upmix128k",
        "anchor-table6",
        "anchor-table7",
        "anchor-table12",
    } <= ids
    checked = 0
    for t in refs.tables:
        for row in t.rows:
            v = row.values
            if t.benchmark == "longbench-e":
                assert v["Avg"] == pytest.approx(_mean([v["0-4k"], v["4-8k"], v["8k+"]]), abs=0.011), (t.id, row.label)
                if "Avg>4k" in v:
                    assert v["Avg>4k"] == pytest.approx(_mean([v["4-8k"], v["8k+"]]), abs=0.011), (t.id, row.label)
                checked += 1
            elif str(t.columns[-1]).lower() == "avg":
                parts = [v[c] for c in t.columns[:-1]]
                if row.note and "typo" in row.note:  # DPRoPE's Table 2 misprints this one average
                    assert abs(v[t.columns[-1]] - _mean(parts)) > 1
                else:
                    assert v[t.columns[-1]] == pytest.approx(_mean(parts), abs=0.011), (t.id, row.label)
                checked += 1
    assert checked >= 57  # DPRoPE Tables 1, 2, 4, 6, 8 and AnchorAttention Table 3


@pytest.mark.parametrize(
    "config,table_id,model",
    [
        ("llama2-anchor.yaml", "anchor-table5-sp64k", "llama2"),
        ("llama2-anchor-128k.yaml", "anchor-table5-sp128k", "llama2"),
        ("llama2-anchor-upmix128k.yaml", "anchor-table5-upmix128k", "llama2"),
        ("llama3-anchor.yaml", "anchor-table6", "llama3"),
        ("mistral-anchor.yaml", "anchor-table6", "mistral"),
        ("qwen15-anchor.yaml", "anchor-table6", "qwen15"),
    ],
)
def test_each_paper_config_reproduces_exactly_its_table_rows(refs, config, table_id, model):
    cfg = load_config(REPO / "config" / config)
    table = _table(refs, table_id)
    target = cfg["extension"]["target_lengths"][0]
    found = set()
    for layout in cfg["extension"]["layouts"]:
        ours = R.run_setting(cfg, f"{model}-base_change-{target}-{layout}")
        rows = [r.label for r in table.rows if R.row_matches(r.setting, ours)]
        assert len(rows) == 1, (layout, rows)
        found.add(rows[0])
    if table_id != "anchor-table6":  # one config per Table 5 block: every row of it
        assert found == {r.label for r in table.rows}
    else:
        assert len(found) == 3
    # and none of another block's rows: the 128k runs never stand beside the 64k numbers
    other = _table(refs, "anchor-table5-sp64k" if table_id != "anchor-table5-sp64k" else "anchor-table5-sp128k")
    for layout in cfg["extension"]["layouts"]:
        ours = R.run_setting(cfg, f"{model}-base_change-{target}-{layout}")
        assert not any(R.row_matches(r.setting, ours) for r in other.rows)


def test_setting_matching():
    cfg = load_config(REPO / "config" / "llama2-dprope.yaml")
    ours = R.run_setting(cfg, "llama2-dprope-16384-full")
    assert ours["interpolated_dims"] == 64 and ours["bins"] == 360 and ours["target_length"] == 16384
    row = {
        "model": "meta-llama/Llama-2-7b-hf",
        "method": "dprope",
        "target_length": 16384,
        "layout": "full",
        "corpus": "pg19",
        "interpolated_dims": 64,
        "bins": 360,
        "train_length": 4096,
    }
    assert R.row_matches(row, ours)
    assert R.row_matches(row, {**ours, "model": "/data/models/llama-2-7B-HF/"})  # a local copy of the model
    assert R.row_matches(row, {**ours, "corpus": "/data/PG19"})
    for key, other in (
        ("model", "meta-llama/Llama-2-13b-hf"),
        ("target_length", 8192),
        ("layout", "anchor"),
        ("interpolated_dims", 80),
        ("corpus", "cerebras/SlimPajama-627B"),
        ("method", "pi"),
    ):
        assert not R.row_matches(row, {**ours, key: other}), key
    assert not R.row_matches(row, {k: v for k, v in ours.items() if k != "bins"})  # ours lacks a key: no match
    anchor = load_config(REPO / "config" / "llama2-anchor.yaml")
    assert R.run_setting(anchor, "llama2-base_change-65536-anchor")["rope_theta"] == 5e6
    assert R.run_setting(anchor, "llama2-none-65536-noft")["rope_theta"] == 10000


def _file(tmp_path, **table) -> Path:
    base = {
        "id": "t1",
        "paper": "p",
        "table": "Table 1",
        "benchmark": "ruler",
        "metric": "m",
        "columns": [4096, 8192],
        "rows": [{"label": "x", "method": "pi", "values": [1.0, 2.0]}],
    }
    base.update(table)
    path = tmp_path / "refs.yaml"
    path.write_text(yaml.safe_dump({"papers": {"p": {"name": "P", "citation": "P et al."}}, "tables": [base]}))
    return path


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"rows": [{"label": "x", "values": [1.0]}]},
            r"tables\[0\] \(t1\): rows\[0\] \(x\): values: expected a list of 2",
        ),
        (
            {"rows": [{"label": "x", "modle": "a", "values": [1, 2]}]},
            r"rows\[0\] \(x\): Additional properties are not allowed \('modle' was unexpected\) "
            r"\(expected model, method",
        ),
        (
            {"rows": [{"label": "x", "method": "dprop", "values": [1, 2]}]},
            r"rows\[0\] \(x\): method 'dprop' is not one of",
        ),
        ({"rows": [{"label": "x", "layout": "anchr", "values": [1, 2]}]}, r"layout 'anchr' is not one of"),
        ({"rows": [{"label": "x", "values": [1, "high"]}]}, r"values\[1\]: 'high' is not of type 'number', 'null'"),
        ({"benchmark": "mmlu"}, r"tables\[0\] \(t1\): benchmark: 'mmlu' is not one of"),
        ({"paper": "q"}, r"tables\[0\] \(t1\): paper 'q' is not one of papers"),
        (
            {"comparable": False},
            r"tables\[0\] \(t1\): 'reason' is a required property \(comparable: false needs a reason\)",
        ),
        ({"protocol": {"tasks": "most"}}, r"protocol.tasks: 'most' is not one of"),
        (
            {"where": "abstract"},
            r"tables\[0\] \(t1\): Additional properties are not allowed \('where' was unexpected\)",
        ),
        ({"setting": {"target_length": None}}, r"setting: target_length: null is only allowed in a row"),
        (
            {"benchmark": "ppl", "at_length": 4096},
            r"benchmark: 'ruler' was expected \(only a RULER table takes at_length",
        ),
        ({"setting": {"bins": "many"}}, r"tables\[0\] \(t1\): setting.bins: 'many' is not of type 'number', 'null'"),
    ],
)
def test_reference_file_errors_name_the_entry(tmp_path, change, message):
    with pytest.raises(RopeextError, match=message):
        R.load_references(_file(tmp_path, **change))


def test_schema_benchmarks_are_the_ones_the_report_names():
    schema = yaml.safe_load(R.load.SCHEMA_PATH.read_text())
    assert schema["$defs"]["table"]["properties"]["benchmark"]["enum"] == list(R.BENCHMARK_NAMES)


def test_reference_file_missing_or_malformed(tmp_path):
    with pytest.raises(RopeextError, match="not found"):
        R.load_references(tmp_path / "missing.yaml")
    bad = tmp_path / "old.yaml"
    bad.write_text(yaml.safe_dump({"references": [{"paper": "x", "value": 1}]}))
    with pytest.raises(
        RopeextError, match=r"Additional properties are not allowed \('references' was unexpected\) \(expected papers"
    ):
        R.load_references(bad)
    assert R.load_references(None).tables == ()
    twice = yaml.safe_load(_file(tmp_path).read_text())
    twice["tables"].append(twice["tables"][0])
    with pytest.raises(RopeextError, match=r"^refs: tables\[1\] \(t1\): id 't1' is used twice$"):
        R.parse_references(twice, "refs")


# ----------------------------------------------------------------------------- our side, pure
def test_longbench_categories_average_the_run_tasks():
    m = {
        "tasks": {
            "lcc": {"score": 60.0},
            "repobench-p": {"score": 50.0},
            "trec": {"score": 70.0},
            "triviaqa": {"score": 80.0},
            "samsum": {"score": 30.0},
            "passage_count": {"score": 3.0},
        }
    }
    cats = R.longbench_categories(m)
    assert cats["code"] == 55.0 and cats["icl"] == 60.0 and cats["synthetic"] == 3.0
    assert cats["single_doc_qa"] is None


def test_open_llm_shots_and_own_tasks_decide_comparability(refs):
    table = _table(refs, "dprope-table2")
    paper = {"truthfulqa_mc2": 0, "hellaswag": 0, "mmlu": 5, "arc_challenge": 25}
    right = {"preset": "dprope_paper", "tasks": {t: {"num_fewshot": n} for t, n in paper.items()}}
    assert R.data_reasons(table, right) == [] and R.protocol_reasons(table, right) == []
    board = {"preset": "leaderboard_v1", "tasks": {**right["tasks"], "hellaswag": {"num_fewshot": 10}}}
    assert R.protocol_reasons(table, board) == ["hellaswag 10-shot here, 0-shot in the paper"]
    local = {"preset": "local", "tasks": {"ropeext_nextline": {"num_fewshot": 0}}}
    assert "the project's own data" in R.data_reasons(table, local)[0]
    # Avg on our side averages the paper's four tasks, not the six of our run
    ours = pd.Series(
        {
            "truthfulqa_mc2": 40.0,
            "hellaswag": 70.0,
            "mmlu": 50.0,
            "arc_challenge": 60.0,
            "winogrande": 0.0,
            "gsm8k": 0.0,
            "Avg": 36.67,
        }
    )
    assert R.our_values(table, ours, board)["Avg"] == 55.0


def test_a_different_setting_is_not_run_even_with_the_same_variant_name(refs):
    cfg = load_config(REPO / "config" / "llama2-dprope.yaml")
    m = _longbench_metrics("llama2-dprope-16384-full")
    from ropeext.eval.longbench.results import table1

    ours = table1([m])
    comp = R.compare_table(_table(refs, "dprope-table1"), ours, {m["variant"]: m}, cfg)
    assert [r.label for _, r, _ in comp.shown] == ["7B DPRoPE s=4 (16k)"]
    cfg["rope"]["interpolated_dims"] = {16384: 60}  # not the paper's n
    comp = R.compare_table(_table(refs, "dprope-table1"), ours, {m["variant"]: m}, cfg)
    assert comp.shown == [] and comp.blocked == []


# ----------------------------------------------------------------------------- the report
def test_report_puts_dprope_longbench_e_beside_ours(tmp_path):
    cfg = load_config(REPO / "config" / "llama2-dprope.yaml")
    ours = _longbench_metrics("llama2-dprope-16384-full")
    build_report(cfg, {"longbench": [_write(tmp_path, "longbench", ours)], "references": REFS}, tmp_path / "report")
    side = pd.read_csv(tmp_path / "report" / "published-dprope-table1.csv", index_col=0)
    row = side.loc["llama2-dprope-16384-full"]
    assert row["paper row"] == "7B DPRoPE s=4 (16k)"
    for col, paper in (("0-4k", 29.98), ("4-8k", 30.30), ("8k+", 30.09), ("Avg", 30.12), ("Avg>4k", 30.20)):
        assert row[f"{col} (paper)"] == paper
    assert row["0-4k"] == ours["bucket_avg"]["0-4k"] and row["Avg"] == ours["Avg"] and row["Avg>4k"] == ours["Avg>4k"]
    assert ours["bucket_avg"]["0-4k"] != ours["bucket_avg"]["8k+"]  # the fixture's buckets differ
    md = re.sub(" +", " ", (tmp_path / "report" / "summary.md").read_text())  # table cells are padded
    line = next(x for x in md.splitlines() if x.startswith("| llama2-dprope-16384-full | 7B DPRoPE s=4 (16k)"))
    assert f"| {ours['bucket_avg']['0-4k']:.2f} | 29.98 | {ours['bucket_avg']['4-8k']:.2f} | 30.30 |" in line
    assert "Produced with: LongBench-E, 13 tasks; templates: data/LongBench/config; data: data/LongBench/data" in md
    assert "Not run in this config: 7B Original (4k); 7B PI s=2 (8k)" in md
    assert (
        "No variant of this config reproduces a row of DPRoPE Table 4 (6 rows), DPRoPE Table 6 (4 rows), "
        "AnchorAttention Table 12 (with Table 7's ICL) (16 rows): not run in this config."
    ) in md
    assert "- DPRoPE Table 2 (Open LLM): not run in this config: 14 of 14 rows." in md  # no Open LLM run given
    assert "- DPRoPE Table 1 (LongBench-E): beside ours: 7B DPRoPE s=4 (16k); not run in this config: 15 of 16" in md


def test_report_never_puts_the_embedded_task_beside_longbench_e(tmp_path):
    cfg = load_config(REPO / "config" / "llama2-dprope.yaml")
    m = _embedded_metrics("llama2-dprope-16384-full")
    build_report(cfg, {"longbench": [_write(tmp_path, "longbench", m)], "references": REFS}, tmp_path / "report")
    md = (tmp_path / "report" / "summary.md").read_text()
    assert (
        '`llama2-dprope-16384-full` beside "7B DPRoPE s=4 (16k)": not comparable: embedded code task '
        "(heldout_lcc), the project's own data, not LongBench-E data."
    ) in md
    assert "the embedded LongBench-E-style task heldout_lcc" in md
    assert "29.98" not in md and "30.12" not in md
    assert not (tmp_path / "report" / "published-dprope-table1.csv").exists()
    assert "reproduced but not comparable: 7B DPRoPE s=4 (16k)" in md


def test_report_puts_anchor_ruler_beside_ours_only_when_comparable(tmp_path):
    cfg = load_config(REPO / "config" / "llama2-anchor.yaml")
    anchor = _ruler_metrics("llama2-base_change-65536-anchor")
    base = _ruler_metrics("llama2-none-65536-noft")
    own_words = _ruler_metrics("llama2-base_change-65536-full", templates="ropeext")
    no_qa = _ruler_metrics("llama2-base_change-65536-intra_doc", drop_qa=True)
    paths = [_write(tmp_path, "ruler", m) for m in (anchor, base, own_words, no_qa)]
    build_report(cfg, {"ruler": paths, "references": REFS}, tmp_path / "report")
    side = pd.read_csv(tmp_path / "report" / "published-anchor-table5-sp64k.csv", index_col=0)
    assert list(side.index) == ["llama2-base_change-65536-anchor"]
    row = side.loc["llama2-base_change-65536-anchor"]
    assert row["paper row"] == "AnchorAttention"
    for length, paper in ((65536, 73.25), (32768, 75.97), (4096, 90.69)):
        assert row[f"{length} (paper)"] == paper and row[str(length)] == anchor["average"][str(length)]
    free = pd.read_csv(tmp_path / "report" / "published-anchor-table2.csv", index_col=0).loc["llama2-none-65536-noft"]
    assert free["paper row"] == "RoPE 10K, no training" and free["4096 (paper)"] == 85.29
    assert free["4096"] == base["average"]["4096"]
    md = re.sub(" +", " ", (tmp_path / "report" / "summary.md").read_text())  # table cells are padded
    assert "| llama2-base_change-65536-anchor | AnchorAttention | " in md and "| 73.25 |" in md
    assert (
        '`llama2-base_change-65536-full` beside "Full Attention": not comparable: prompt wording of cwe, fwe, '
        "niah, qa, vt is the project's own, not RULER's"
    ) in md
    assert (
        '`llama2-base_change-65536-intra_doc` beside "Intra-Doc": not comparable: averages the task set '
        "'anchor_llama2 without qa_1, qa_2', the paper 'anchor_llama2' (11 tasks)"
    ) in md
    assert "66.40" not in md and "69.97" not in md  # their published values stay out
    assert (
        "Not run in this config: Intra-Doc + Reset; Intra-Doc + Interleaved; Anchor + Tag; Anchor + Interleaved." in md
    )
    assert "templates: templates file " in md and "haystack the held-out split of this corpus" in md


def _openllm_metrics(variant: str, shots: dict[str, int], scores: dict[str, float], preset: str) -> dict:
    """An Open LLM metrics.json as `ropeext eval openllm` writes it (built by the same function)."""
    from ropeext.eval.openllm.presets import HEADLINE
    from ropeext.eval.openllm.report import build_metrics

    records = [
        {
            "task": t,
            "results": {t: {f"{HEADLINE[t]},none": scores[t], f"{HEADLINE[t]}_stderr,none": 0.01}},
            "num_fewshot": n,
            "versions": {t: 1.0},
            "n-shot": {t: n},
            "n-samples": {t: {"effective": 100}},
            "configs": {},
            "lm_eval_version": "0.4.13",
        }
        for t, n in shots.items()
    ]
    return build_metrics(records, variant=variant, model="m", max_length=16384, preset=preset)


def test_report_puts_dprope_open_llm_beside_ours_only_with_the_papers_shots(tmp_path):
    cfg = load_config(REPO / "config" / "llama2-dprope.yaml")
    scores = {"truthfulqa_mc2": 0.40, "hellaswag": 0.75, "mmlu": 0.45, "arc_challenge": 0.50, "winogrande": 0.7}
    paper_shots = {"truthfulqa_mc2": 0, "hellaswag": 0, "mmlu": 5, "arc_challenge": 25}
    right = _openllm_metrics("llama2-yarn-16384-full", paper_shots, scores, "dprope_paper")
    board = _openllm_metrics(
        "llama2-pi-16384-full", {**paper_shots, "hellaswag": 10, "winogrande": 5}, scores, "leaderboard_v1"
    )
    paths = [_write(tmp_path, "openllm", m) for m in (right, board)]
    build_report(cfg, {"openllm": paths, "references": REFS}, tmp_path / "report")
    side = pd.read_csv(tmp_path / "report" / "published-dprope-table2.csv", index_col=0)
    assert list(side.index) == ["llama2-yarn-16384-full"]
    row = side.loc["llama2-yarn-16384-full"]
    assert row["paper row"] == "7B YaRN s=4" and row["hellaswag (paper)"] == 77.10 and row["hellaswag"] == 75.0
    assert row["Avg"] == 52.5 and row["Avg (paper)"] == 53.29
    md = (tmp_path / "report" / "summary.md").read_text()
    assert (
        '`llama2-pi-16384-full` beside "7B PI s=4": not comparable: hellaswag 10-shot here, 0-shot in the paper.'
    ) in md
    assert "76.08" not in md  # the PI row's published HellaSwag stays out
    assert "lm-eval 0.4.13 tasks: truthfulqa_mc2 0-shot, hellaswag 0-shot, mmlu 5-shot, arc_challenge 25-shot" in md


def test_longbench_categories_stand_beside_anchor_table12_and_not_beside_longbench_e(refs):
    from ropeext.eval.longbench.results import table1

    cfg = load_config(REPO / "config" / "llama2-anchor.yaml")
    scores = {
        "lcc": 60.0,
        "repobench-p": 50.0,
        "trec": 70.0,
        "triviaqa": 80.0,
        "samsum": 30.0,
        "hotpotqa": 9.0,
        "qasper": 20.0,
        "gov_report": 15.0,
        "passage_count": 3.0,
    }
    m = {
        "variant": "llama2-base_change-65536-anchor",
        "benchmark": "longbench",
        "limit": None,
        "tasks": {t: {"score": v} for t, v in scores.items()},
        "Avg": 37.44,
        "prompt_source": {t: "data/LongBench/config" for t in scores},
    }
    ours = table1([m])
    by_variant = {m["variant"]: m}
    comp = R.compare_table(_table(refs, "anchor-table12"), ours, by_variant, cfg)
    [(variant, row, values)] = comp.shown
    assert row.label == "SP-64K Anchor" and values["code"] == 55.0 and values["icl"] == 60.0
    assert values["summarization"] == 15.0 and row.values["code"] == 62.04
    assert "62.04" in R.comparison_lines(comp)[2]
    for lbe in ("dprope-table1", "dprope-table4"):  # LongBench-E tables: another benchmark, never matched
        comp = R.compare_table(_table(refs, lbe), ours, by_variant, cfg)
        assert comp.shown == [] and comp.blocked == []
    own = {**m, "prompt_source": {**m["prompt_source"], "lcc": "ropeext (embedded task)"}}
    comp = R.compare_table(_table(refs, "anchor-table12"), ours, {m["variant"]: own}, cfg)
    assert comp.shown == [] and "prompts of lcc are the project's own" in comp.blocked[0][2][0]
