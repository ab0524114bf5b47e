"""LongBench metrics on small hand-worked examples (expected values computed by hand)."""

from __future__ import annotations

import pytest

from ropeext.errors import RopeextError
from ropeext.eval.longbench import metrics
from ropeext.eval.longbench.metrics import score


def test_normalize_answer_squad():
    assert metrics.normalize_answer("The  Cat, an apple; A dog!") == "cat apple dog"
    # articles only as whole words
    assert metrics.normalize_answer("Theater anthem") == "theater anthem"


def test_qa_f1_hand_computed():
    # pred tokens: [cat, sat, mat]; gold: [cat, sat, on, mat, today] -> overlap 3
    # p = 3/3, r = 3/5, f1 = 2*1*0.6/1.6 = 0.75
    assert score("hotpotqa", "The cat sat; the mat.", ["a cat sat on the mat today"], None) == pytest.approx(0.75)
    # multiset overlap: pred [x, x, y], gold [x, y, y] -> overlap 2, p = r = 2/3
    assert metrics.qa_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert score("qasper", "nothing", ["else"], None) == 0.0


def test_max_over_answers_and_e_suffix():
    # second answer matches exactly
    assert score("triviaqa_e", "Paris", ["London", "paris"], None) == 1.0
    assert score("2wikimqa", "Paris", [], None) == 0.0


def test_first_line_cut_only_for_listed_tasks():
    pred = "\n\nParis\nLondon Berlin"
    # triviaqa: cut to "Paris" -> exact
    assert score("triviaqa", pred, ["Paris"], None) == 1.0
    # hotpotqa: no cut; tokens [paris, london, berlin] vs [paris]: p=1/3, r=1, f1=0.5
    assert score("hotpotqa", pred, ["Paris"], None) == pytest.approx(0.5)


def test_rouge_l_hand_computed():
    # rouge (exclusive n-grams): ref words {the, cat, sat, down, on, a, mat} m=7; hyp n=4; LCS=4
    # r = 4/7, p = 1, f = 2 r p / (r + p + 1e-8) = 8/11
    assert score("gov_report", "cat sat on mat", ["the cat sat down on a mat"], None) == pytest.approx(8 / 11, abs=1e-7)
    # an empty prediction is rejected by rouge -> 0
    assert score("multi_news", "", ["anything"], None) == 0.0
    # samsum: first-line cut before rouge
    assert score("samsum", "cat sat on mat\nextra words here", ["the cat sat down on a mat"], None) == pytest.approx(
        8 / 11, abs=1e-7
    )


def test_rouge_zh_segments_with_jieba():
    # identical Chinese texts -> f = 2*1*1/(2+1e-8)
    assert score("vcsum", "我爱北京天安门", ["我爱北京天安门"], None) == pytest.approx(1.0, abs=1e-7)


def test_qa_f1_zh():
    # jieba: 我/爱/北京/天安门 vs 我/爱/北京 (punctuation token dropped): overlap 3, p=3/4, r=1 -> 6/7
    assert score("multifieldqa_zh", "我爱北京天安门", ["我爱北京。"], None) == pytest.approx(6 / 7)


def test_classification_official_semantics():
    classes = ["Abbreviation", "Entity", "Animal", "Human being"]
    assert score("trec", "Animal", ["Animal"], classes) == 1.0
    # two classes named -> 1/2
    assert score("trec", "Animal or Entity", ["Animal"], classes) == 0.5
    # none named -> 0 (the difflib fallback is unreachable in the official code)
    assert score("trec", "no idea", ["Animal"], classes) == 0.0
    # first line only: the second line's class does not count
    assert score("trec", "Entity\nAnimal", ["Animal"], classes) == 0.0


def test_classification_removal_while_iterating():
    # matched = [a, ab, abc]; ground truth "abc": "a" is removed (substring of gt), which moves "ab"
    # under the cursor so it is skipped and stays -> matched [ab, abc] -> 1/2 (a clean filter would give 1)
    assert metrics.classification("a ab abc", "abc", all_classes=["a", "ab", "abc"]) == 0.5
    with pytest.raises(RopeextError, match="all_classes"):
        metrics.classification("x", "y", all_classes=None)


def test_count_and_retrieval():
    # numbers 3, 5, 3 -> two of three equal 3
    assert score("passage_count", "3 or 5 or 3", ["3"], None) == pytest.approx(2 / 3)
    assert score("passage_count", "none", ["3"], None) == 0.0
    assert score("passage_retrieval_en", "Paragraph 12", ["Paragraph 12"], None) == 1.0
    assert score("passage_retrieval_en", "It is 12, not 2", ["Paragraph 12"], None) == 0.5
    assert score("passage_retrieval_zh", "段落7", ["段落7"], None) == 1.0
    with pytest.raises(RopeextError, match="pattern"):
        metrics.retrieval("1", "no paragraph here")


def test_code_sim_first_code_line_and_ratio():
    # Levenshtein indel distance of "abcd"/"abce" is 2 over 8 chars -> 75
    assert score("lcc", "abcd", ["abce"], None) == pytest.approx(0.75)
    # comment, fence and // lines are skipped; leading newlines stripped
    pred = "\n\n# comment\n```\n// c++\nreturn x\nmore"
    assert metrics.first_code_line(pred) == "return x"
    assert score("repobench-p", pred, ["return x"], None) == 1.0
    assert metrics.first_code_line("# only a comment") == ""
    assert score("lcc", "# only a comment", ["x = 1"], None) == 0.0
    # the embedded task scores like lcc
    from ropeext.eval.longbench import protocol

    assert metrics.metric_name(protocol.EMBEDDED_TASK) == "code_sim"
    assert score(protocol.EMBEDDED_TASK, "abcd", ["abce"], None) == pytest.approx(0.75)


def test_code_sim_backend_is_pinned_levenshtein():
    assert metrics.code_sim_backend().startswith("python-Levenshtein 0.27.5")


def test_unknown_task():
    with pytest.raises(RopeextError, match="unknown LongBench task 'nosuch'"):
        score("nosuch", "a", ["a"], None)


def test_aggregate_rounding():
    assert metrics.aggregate([1.0, 0.0, 0.5]) == 50.0
    assert metrics.aggregate([1 / 3]) == 33.33
    assert metrics.aggregate([]) is None
    assert metrics.aggregate_bucket([2 / 3, 1.0]) == 83.33
    assert metrics.aggregate_bucket([]) is None
