"""RULER generators, fitting, metrics, sources and tables: deterministic checks."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from ropeext.errors import RopeextError
from ropeext.eval.ruler import generate as G
from ropeext.eval.ruler import metrics as M
from ropeext.eval.ruler.fit import TooShort, encode, fit_prompt, tolerance
from ropeext.eval.ruler.haystack import NOISE, WordStream, essay_stream, load_essay_texts
from ropeext.eval.ruler.qa import load_hotpotqa, load_squad
from ropeext.eval.ruler.report import ruler_table
from ropeext.eval.ruler.tasks import SUBSETS, TASK_NAMES, TASKS, load_templates, resolve_tasks

ESSAY = (
    "Rivers carve valleys over long ages. Each flood moves stones a little further downstream!\n"
    "Farmers settle where the soil is rich? Towns grow around the markets they build.\n\n"
    "Letters travel slowly across the mountains. Merchants learn the roads by heart."
) * 4

NIAH = [t for t in TASK_NAMES if t.startswith("niah")]


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def squad_file(tmp_path):
    data = {
        "version": "v2.0",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": f"Paragraph {i} says the capital of land {i} is city{i}x and little else.",
                        "qas": [
                            {
                                "question": f"What is the capital of land {i}?",
                                "id": str(i),
                                "is_impossible": False,
                                "answers": [
                                    {"text": f"city{i}x", "answer_start": 0},
                                    {"text": f"City{i}x", "answer_start": 0},
                                ],
                            },
                            {"question": "Unanswerable?", "id": f"u{i}", "is_impossible": True, "answers": []},
                        ],
                    }
                    for i in range(12)
                ],
            }
        ],
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    return path


def hotpot_file(tmp_path):
    recs = []
    for i in range(6):
        recs.append(
            {
                "_id": str(i),
                "question": f"Who founded firm {i}?",
                "answer": f"person{i}q",
                "supporting_facts": [[f"Firm {i}", 0]],
                "context": [
                    [f"Firm {i}", [f"Firm {i} was founded by person{i}q. ", "It sells rope."]],
                    [f"Other {i}", [f"Other {i} is a river. ", "It is long."]],
                ],
            }
        )
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps(recs))
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ruler_src")
    return G.Sources(
        essay=WordStream(ESSAY, joiner="\n\n"),
        qa={"squad": load_squad(squad_file(tmp)), "hotpotqa": load_hotpotqa(hotpot_file(tmp))},
    )


# ------------------------------------------------------------------ generators


@pytest.mark.parametrize("task", [t for t in TASK_NAMES if t != "cwe"])
def test_samples_fit_length_within_two_percent(tok, sources, task):
    for length in (1024, 1536):
        for s in G.generate_samples(task, length, 2, tok, seed=3, sources=sources):
            ids = encode(tok, s["prompt"])
            assert s["prompt_tokens"] == len(ids)
            assert s["total_tokens"] == len(ids) + s["max_new_tokens"]
            assert length - tolerance(length) <= s["total_tokens"] <= length, (task, length, s["total_tokens"])


def test_cwe_fits_and_counts(tok, sources):
    length = 3072  # below 4096 RULER uses 6 x 10 common words; with the example ~1.7k tiny-BPE tokens
    s = G.make_sample("cwe", length, 0, tok, seed=1, sources=sources)
    assert length - tolerance(length) <= s["total_tokens"] <= length
    # the question's list is the last numbered list; count its entries by brute force
    listing = s["prompt"].rsplit("\n", 2)[-2]
    entries = re.split(r"(?:^| )\d+\. ", listing)[1:]  # entries may hold a space ("contact lens")
    counts = Counter(entries)
    assert len(s["answers"]) == 10
    for w in s["answers"]:
        assert counts[w] == s["freq_cw"]
    others = [c for w, c in counts.items() if w not in s["answers"]]
    assert others and max(others) <= s["freq_ucw"]


def test_generators_are_deterministic_for_a_seed(tok, sources):
    for task in TASK_NAMES:
        if task == "cwe":
            continue
        a = G.make_sample(task, 1024, 1, tok, seed=7, sources=sources)
        b = G.make_sample(task, 1024, 1, tok, seed=7, sources=sources)
        c = G.make_sample(task, 1024, 1, tok, seed=8, sources=sources)
        assert a == b, task
        assert a["prompt"] != c["prompt"], task


def test_resume_hint_does_not_change_samples(tok, sources):
    first = list(G.generate_samples("niah_single_2", 1024, 3, tok, seed=2, sources=sources))
    alone = G.make_sample("niah_single_2", 1024, 2, tok, seed=2, sources=sources)
    assert first[2] == alone


@pytest.mark.parametrize("task", NIAH)
def test_needle_answers_are_in_the_context(tok, sources, task):
    spec = TASKS[task]
    s = G.make_sample(task, 1024, 0, tok, seed=5, sources=sources)
    body = s["prompt"]
    assert len(s["answers"]) == spec["v"] * spec["q"]
    for value in s["answers"]:
        hits = re.findall(r"One of the special magic \w+ for (\S+) is: " + re.escape(value) + r"\.", body)
        assert len(hits) == 1  # exactly one needle carries this value, and its key is asked about
        assert hits[0] in body.rsplit("\n", 1)[-1]
    if spec["haystack"] == "needle":
        assert len(re.findall("One of the special magic", body)) > 2  # distractor needles fill it
    if spec["value"] == "uuids":
        assert all(
            re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", v)
            for v in s["answers"]
        )


def test_noise_and_essay_haystacks(tok, sources):
    noise = G.make_sample("niah_single_1", 1024, 0, tok, seed=0, sources=sources)["prompt"]
    essay = G.make_sample("niah_single_2", 1024, 0, tok, seed=0, sources=sources)["prompt"]
    assert NOISE in noise and "Rivers" not in noise
    assert "Merchants learn the roads by heart." in essay and "The grass is green." not in essay


def test_vt_chain_resolves_to_answers(tok, sources):
    s = G.make_sample("vt", 1024, 0, tok, seed=4, sources=sources)
    body = s["prompt"][s["prompt"].rfind("Follow the chain") :]  # the question, not the worked example
    assigned = dict(re.findall(r"VAR ([A-Z]{5}) = (VAR [A-Z]{5}|\d+)", body))
    value = re.search(r"assigned the value (\d+)", body).group(1)

    def resolve(v):
        while assigned[v].startswith("VAR "):
            v = assigned[v][4:]
        return assigned[v]

    holders = sorted(v for v in assigned if resolve(v) == value)
    assert holders == sorted(s["answers"]) and len(holders) == 5


def test_fwe_answers_are_the_most_frequent_words(tok, sources):
    s = G.make_sample("fwe", 1536, 0, tok, seed=2, sources=sources)
    coded = re.search(r"occur most often\. (.*)\nQuestion", s["prompt"], re.S).group(1).split()
    counts = Counter(w for w in coded if w != "...")
    top3 = [w for w, _ in counts.most_common(3)]
    assert sorted(top3) == sorted(s["answers"])
    assert counts.most_common(1)[0][1] < coded.count("...")  # rank one is the dots


def test_zipf_counts_match_scipy():
    from scipy.special import zeta

    assert G.zeta(2.0) == pytest.approx(zeta(2.0), rel=1e-12)
    assert G.zeta(1.5) == pytest.approx(zeta(1.5), rel=1e-10)
    expected = [int(1000 * k**-2.0 / zeta(2.0)) for k in range(1, 21)]
    assert G.zipf_counts(1000, 20, 2.0) == expected


def test_qa_samples_contain_gold_and_distractors(tok, sources):
    s = G.make_sample("qa_1", 1024, 3, tok, seed=0, sources=sources)
    m = re.search(r"What is the capital of land (\d+)\?", s["prompt"])
    i = m.group(1)
    assert s["answers"] == [f"city{i}x", f"City{i}x"]
    assert f"Paragraph {i} says" in s["prompt"]
    assert s["prompt"].count("Document ") > 3
    h = G.make_sample("qa_2", 1024, 0, tok, seed=0, sources=sources)
    j = re.search(r"Who founded firm (\d+)\?", h["prompt"]).group(1)
    assert h["answers"] == [f"person{j}q"] and f"founded by person{j}q" in h["prompt"]


def test_too_short_length_is_reported(tok, sources):
    with pytest.raises(TooShort, match="niah_multiquery at length 256"):
        G.make_sample("niah_multiquery", 256, 0, tok, sources=sources)
    with pytest.raises(TooShort, match="reserved for the answer"):
        G.make_sample("niah_single_1", 100, 0, tok, sources=sources)


def test_essay_task_without_source_fails_clearly(tok):
    with pytest.raises(RopeextError, match="essay"):
        G.make_sample("niah_single_2", 1024, 0, tok, sources=G.Sources())


# ------------------------------------------------------------------ fitting


def test_fit_prompt_matches_brute_force(tok):
    units = [f"w{i % 13}" for i in range(400)]

    def build(n, p):
        return "head " + " ".join(units[:n]) + (" pad" * p)

    for budget in (20, 57, 131, 300):
        fitted = fit_prompt(build, tok, budget, tol=0, hint=3)
        best = max(n for n in range(401) if len(encode(tok, build(n, 0))) <= budget)
        assert fitted.n_units == best
        assert fitted.tokens == len(encode(tok, fitted.text)) <= budget
        # with tol=0 padding closes the remaining gap as far as whole pads allow
        assert len(encode(tok, build(best, fitted.n_pad + 1))) > budget


# ------------------------------------------------------------------ metrics


def test_string_match_metrics_hand_computed():
    assert M.string_match_all("The numbers are 123 and 456.", ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert M.string_match_all("ABC", ["abc"]) == 1.0
    assert M.string_match_all("a\x00b", ["a\nb"]) == 1.0  # control characters become newlines
    assert M.string_match_part("It is Paris, France", ["London", "paris"]) == 1.0
    assert M.string_match_part("Rome", ["London", "paris"]) == 0.0
    recs = [
        {"task": "a", "length": 4, "score": 1.0},
        {"task": "a", "length": 4, "score": 0.5},
        {"task": "a", "length": 8, "score": 0.0},
        {"task": "b", "length": 4, "score": 1 / 3},
        {"task": "c", "length": 4, "score": 0.2},
        {"task": "b", "length": 8, "score": 1.0},
    ]
    scores = M.task_scores(recs)
    assert scores == {"a": {4: 75.0, 8: 0.0}, "b": {4: 33.33, 8: 100.0}, "c": {4: 20.0}}
    assert M.average_by_length(scores, ["a", "b"], [4, 8])[8] == 50.0
    assert M.average_by_length(scores, ["a", "c"], [4, 8]) == {4: 47.5, 8: None}  # c has no score at 8


def test_effective_length():
    assert M.effective_length({4096: 90.0, 8192: 86.0, 16384: 80.0, 32768: 95.0}) == 8192
    assert M.effective_length({4096: 85.6, 8192: 99.0}) is None  # must be above, not equal
    assert M.effective_length({1: 50.0, 2: 40.0}, threshold=30) == 2
    assert M.effective_length({1: 50.0, 2: None, 3: 60.0}, threshold=30) == 1


# ------------------------------------------------------------------ tasks, templates, sources


def test_task_table_and_subsets():
    assert len(TASK_NAMES) == 13
    assert TASKS["niah_multikey_3"]["key"] == "uuids" and TASKS["niah_multikey_2"]["haystack"] == "needle"
    sub, label = resolve_tasks(subset="anchor_llama2")
    assert len(sub) == 11 and "cwe" not in sub and "niah_multikey_3" not in sub and label == "anchor_llama2"
    assert resolve_tasks("vt,niah_single_1")[0] == ["niah_single_1", "vt"]
    assert resolve_tasks(list(SUBSETS["synthetic"]))[1] == "synthetic"
    with pytest.raises(RopeextError, match="unknown RULER task.*niah_single_9"):
        resolve_tasks("niah_single_9")
    with pytest.raises(RopeextError, match="subset 'nope'"):
        resolve_tasks(subset="nope")


def test_templates_file(tmp_path, tok, sources):
    path = tmp_path / "t.yaml"
    path.write_text("fwe:\n  template: 'Coded: {context}\\nTop three?'\n  max_new_tokens: 10\n")
    tpl = load_templates(path)
    s = G.make_sample("fwe", 1024, 0, tok, seed=0, sources=sources, templates=tpl)
    assert s["prompt"].startswith("Coded: ") and s["max_new_tokens"] == 10
    bad = tmp_path / "bad.yaml"
    bad.write_text("fwe:\n  template: 'no context here'\n")
    with pytest.raises(RopeextError, match=r"fwe.template has no \{context\}"):
        load_templates(bad)
    with pytest.raises(RopeextError, match="templates file not found"):
        load_templates(tmp_path / "missing.yaml")
    with pytest.raises(RopeextError, match=r"niah.gen_prefix: unknown field \(allowed: template, template_single"):
        load_templates(_yaml(tmp_path / "g.yaml", {"niah": {"gen_prefix": "x"}}))


def _yaml(path, data):
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def test_a_users_copy_of_rulers_wording(tmp_path, tok, sources):
    """A templates file may carry RULER's whole niah wording: a one-needle variant, and a delimiter between
    question and answer prefix; the kinds it words are recorded as the file's, the others as the project's."""
    from ropeext.eval.ruler.tasks import describe_templates

    path = _yaml(
        tmp_path / "ruler.yaml",
        {
            "niah": {
                "template": (
                    "Some special magic {type_needle_v} are hidden.\n{context}\nWhat are all of them for {query}?"
                ),
                "template_single": "A special magic {type_needle_v} is hidden.\n{context}\nWhat is it for {query}?",
                "answer_prefix": "The special magic {type_needle_v} for {query} are",
                "answer_prefix_single": "The special magic {type_needle_v} for {query} is",
                "delimiter": "\n\n",
            }
        },
    )
    tpl = load_templates(path)
    assert describe_templates(tpl)["template_source"] == {
        "niah": f"templates file {path}",
        "vt": "ropeext",
        "cwe": "ropeext",
        "fwe": "ropeext",
        "qa": "ropeext",
    }
    one = G.make_sample("niah_single_1", 1024, 0, tok, seed=0, sources=sources, templates=tpl)["prompt"]
    many = G.make_sample("niah_multivalue", 1024, 0, tok, seed=0, sources=sources, templates=tpl)["prompt"]
    assert one.startswith("A special magic number is hidden.\n") and "?\n\nThe special magic number for " in one
    assert one.endswith(" is")
    assert many.startswith("Some special magic numbers are hidden.\n") and many.endswith(" are")
    tweak = load_templates(_yaml(tmp_path / "t.yaml", {"vt": {"max_new_tokens": 8}}))
    assert tweak["vt"]["source"] == f"ropeext, with fields from {tmp_path / 't.yaml'}"


def test_essay_sources(tmp_path, tok):
    with pytest.raises(RopeextError, match="essay source not found"):
        load_essay_texts(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RopeextError, match="no .txt files"):
        load_essay_texts(empty)
    (empty / "b.txt").write_text("Second file.")
    (empty / "a.txt").write_text("First file.")
    assert load_essay_texts(empty) == ["First file.", "Second file."]

    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [encode(tok, "Alpha beta gamma.")[1:], encode(tok, "Delta epsilon.")[1:]]
    pq.write_table(pa.table({"input_ids": pa.array(ids, type=pa.list_(pa.int32()))}), tmp_path / "d.parquet")
    assert essay_stream(tmp_path / "d.parquet", tok).text == "Alpha beta gamma.\n\nDelta epsilon."
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(RopeextError, match="no 'input_ids' column"):
        load_essay_texts(tmp_path / "bad.parquet", tok)


def test_qa_loaders_reject_bad_files(tmp_path):
    with pytest.raises(RopeextError, match="SQuAD .* not found"):
        load_squad(tmp_path / "none.json")
    (tmp_path / "x.json").write_text('{"data": [{"paragraphs": [{"qas": []}]}]}')
    with pytest.raises(RopeextError, match="missing or malformed field 'context'"):
        load_squad(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{}")
    with pytest.raises(RopeextError, match="HotpotQA .* expected a JSON list"):
        load_hotpotqa(tmp_path / "y.json")
    sq = load_squad(squad_file(tmp_path))
    assert len(sq.items) == 12 and len(sq.documents) == 12  # the unanswerable questions are left out


def test_word_stream_wraps_and_cuts_at_sentences():
    ws = WordStream("One two. Three four five.", joiner=" | ")
    assert ws.span(0, 2) == "One two."
    assert ws.span(3, 7) == "four five. | One two."
    assert ws.boundary_near(0, 5, 0.3) == 2  # after "two." rather than mid-sentence
    assert ws.with_insertions(0, 5, [(2, "X")]) == "One two. X Three four five."


# ------------------------------------------------------------------ table


def test_ruler_table_rows_variants_columns_lengths(tmp_path):
    def metrics(variant, a, b):
        return {
            "variant": variant,
            "lengths": [4, 8],
            "subset": "all",
            "threshold": 50.0,
            "tasks": ["t1", "t2"],
            "scores": {"t1": {"4": a[0], "8": a[1]}, "t2": {"4": b[0], "8": b[1]}},
            "average": {"4": (a[0] + b[0]) / 2, "8": (a[1] + b[1]) / 2},
            "effective_length": None,
        }

    m1 = metrics("pi", (100.0, 60.0), (80.0, 20.0))
    (tmp_path / "m2.json").write_text(json.dumps(metrics("yarn", (90.0, 90.0), (70.0, 30.0))))
    table = ruler_table([m1, tmp_path / "m2.json"])
    assert list(table.index) == ["pi", "yarn"]
    assert table.loc["pi", 4] == 90.0 and table.loc["yarn", 8] == 60.0
    assert table.loc["pi", "avg"] == 65.0 and table.loc["pi", "subset"] == "all"
    only = ruler_table([m1], tasks=["t1"])
    assert only.loc["pi", 8] == 60.0 and only.loc["pi", "effective_length"] == 8
    with pytest.raises(RopeextError, match="no scores for t3"):
        ruler_table([m1], tasks=["t3"])
    # the report writes a variant that fails already at its shortest length in RULER's notation ("<4K")
    from ropeext.suites.ruler import below_shortest

    m3 = {**metrics("none", (0.0, 10.0), (0.0, 0.0)), "average": {"4": None, "8": 5.0}}  # 4: not measured
    table = ruler_table([m1, m3])
    lengths = [4, 8]
    assert [below_shortest(row, lengths) for _, row in table.iterrows()] == ["<4", "<8"]
    assert below_shortest(only.loc["pi"], lengths) == 8
