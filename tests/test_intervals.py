"""The report's 95% intervals against independent references: scipy's Wilson interval, a plain bootstrap loop,
and coverage on simulated data whose true value is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from ropeext.report import intervals as I


@pytest.mark.parametrize("k, n", [(0, 1), (0, 3), (1, 3), (3, 3), (7, 20), (50, 100), (999, 1000), (0, 250)])
def test_wilson_matches_scipy(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = I.wilson(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)


def test_wilson_of_a_mean_score_lies_between_its_neighbours_counts():
    """A mean of scores in [0, 1] (RULER's partial matches) takes the same formula at a fractional count."""
    lo, hi = I.wilson(2.5, 5)
    lo2, hi2 = I.wilson(2, 5)
    lo3, hi3 = I.wilson(3, 5)
    assert lo2 < lo < lo3 and hi2 < hi < hi3
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        I.wilson(4, 3)
    with pytest.raises(ValueError, match="n >= 1"):
        I.wilson(0, 0)


def _loop_percentile(stats: list[float]) -> tuple[float, float]:
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def test_the_bootstrap_of_a_perplexity_equals_a_plain_loop_over_the_same_draws():
    rng = np.random.default_rng(5)
    nll = rng.gamma(2.0, 30.0, size=17)
    tokens = rng.integers(20, 40, size=17).astype(float)
    lo, hi = I.ppl_bootstrap(nll, tokens, resamples=500, seed=11)
    draws = np.random.default_rng(11)
    stats = []
    for _ in range(500):
        idx = [int(draws.integers(0, 17)) for _ in range(17)]
        stats.append(math.exp(sum(nll[i] for i in idx) / sum(tokens[i] for i in idx)))
    assert (lo, hi) == pytest.approx(_loop_percentile(stats), rel=1e-12)
    point = math.exp(nll.sum() / tokens.sum())
    assert lo < point < hi
    assert I.ppl_bootstrap(nll, tokens, resamples=500, seed=11) == (lo, hi)  # deterministic
    assert I.ppl_bootstrap(nll, tokens, resamples=500, seed=12) != (lo, hi)


def test_the_stratified_bootstrap_of_a_mean_of_group_means_equals_a_plain_loop():
    groups = [np.array([0.0, 1.0, 0.5, 1.0]), np.array([0.2, 0.4]), np.array([1.0, 1.0, 0.0])]
    lo, hi = I.mean_of_means_bootstrap(groups, resamples=300, seed=3)
    draws = np.random.default_rng(3)
    means = [[] for _ in range(300)]  # the draws go group by group, each group's resamples one after another
    for g in groups:
        for r in range(300):
            idx = [int(draws.integers(0, len(g))) for _ in range(len(g))]
            means[r].append(sum(g[i] for i in idx) / len(g))
    stats = [sum(m) / len(m) for m in means]
    assert (lo, hi) == pytest.approx(_loop_percentile(stats), rel=1e-12)
    one = [np.array([0.1, 0.9, 0.4, 0.6, 0.3])]
    assert I.mean_of_means_bootstrap(one, resamples=300, seed=3) == I.mean_bootstrap(one[0], resamples=300, seed=3)


def test_a_mean_over_buckets_of_task_means_resamples_every_task_bucket_on_its_own():
    buckets = [[np.array([0.0, 1.0]), np.array([0.5])], [np.array([1.0, 1.0, 0.0])]]
    lo, hi = I.nested_means_bootstrap(buckets, resamples=200, seed=2)
    draws = np.random.default_rng(2)
    tops = []
    for groups in buckets:
        means = [[] for _ in range(200)]
        for g in groups:
            for r in range(200):
                means[r].append(np.mean([g[int(draws.integers(0, len(g)))] for _ in range(len(g))]))
        tops.append([np.mean(m) for m in means])
    assert (lo, hi) == pytest.approx(_loop_percentile([np.mean(x) for x in zip(*tops)]), rel=1e-12)
    with pytest.raises(ValueError, match="every group needs at least one value"):
        I.nested_means_bootstrap([[np.array([])]])


def test_the_bootstrap_covers_the_true_perplexity_about_95_percent_of_the_time():
    """200 simulated evaluations of 40 windows each: the interval holds the true perplexity ~95% of the time."""
    rng = np.random.default_rng(0)
    true_nll = 2.0  # per token
    hits = 0
    for _ in range(200):
        tokens = np.full(40, 32.0)
        nll = rng.gamma(shape=4.0, scale=true_nll * 32 / 4.0, size=40)  # per-window sums, mean 2.0 x 32
        lo, hi = I.ppl_bootstrap(nll, tokens, resamples=400, seed=1)
        hits += lo <= math.exp(true_nll) <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_wilson_covers_the_true_accuracy_at_least_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    for p, n in ((0.3, 20), (0.9, 30)):
        k = rng.binomial(n, p, size=2000)
        cover = np.mean([I.wilson(int(x), n)[0] <= p <= I.wilson(int(x), n)[1] for x in k])
        assert 0.92 <= cover <= 0.99


def test_intervals_are_told_apart_only_when_they_do_not_overlap():
    a = I.Interval(10.0, 9.0, 11.0, 20, "windows", "bootstrap")
    b = I.Interval(12.5, 11.5, 13.5, 20, "windows", "bootstrap")
    c = I.Interval(11.8, 10.9, 12.6, 20, "windows", "bootstrap")
    assert I.separated(b, a) == 1 and I.separated(a, b) == -1
    assert I.separated(a, c) == 0 and I.separated(c, b) == 0
    touching = I.Interval(12.0, 11.0, 13.0, 20, "windows", "bootstrap")
    assert I.separated(touching, a) == 0  # sharing an end point is an overlap
    unknown = I.Interval(30.0, n=20, unit="windows")
    assert not unknown.known and I.separated(unknown, a) == 0
    assert I.accuracy(0, 3).text(".1f") == "0.0 [0.0, 56.1]"
    assert unknown.text(".1f") == "30.0"


def test_an_accuracy_cell_is_in_percent_with_its_count():
    iv = I.accuracy(7, 20, unit="prompts")
    ref = binomtest(7, 20).proportion_ci(method="wilson")
    assert iv.value == pytest.approx(35.0) and iv.n == 20 and iv.unit == "prompts" and iv.method == "wilson"
    assert iv.lo == pytest.approx(100 * ref.low) and iv.hi == pytest.approx(100 * ref.high)
    assert I.accuracy(0, 0).known is False


# ----------------------------------------------------------------------------- cells from the stages' metrics
def test_passkey_metrics_keep_their_counts_and_cells_take_wilson():
    from ropeext.eval import passkey
    from ropeext.report.measures import passkey_cells

    records = [
        {"length": n, "depth": d, "correct": c, "prompt_tokens": n - 5}
        for n, hits in ((64, (1, 1, 0, 1)), (128, (0, 0, 0, 0)))
        for d, c in zip((0.0, 0.5, 1.0, 1.0), hits)
    ]
    m = {"variant": "v", **passkey.summarize(records, [64, 128], [0.0, 0.5, 1.0])}
    assert m["correct_by_length"] == {"64": 3, "128": 0} and m["n_by_length"] == {"64": 4, "128": 4}
    cells = passkey_cells(m)
    ref = binomtest(3, 4).proportion_ci(method="wilson")
    assert cells["64"].value == 75.0 and cells["64"].n == 4
    assert (cells["64"].lo, cells["64"].hi) == pytest.approx((100 * ref.low, 100 * ref.high))
    assert cells["128"].value == 0.0 and cells["128"].lo == 0.0 and cells["Avg"].n == 8
    # a file from before the counts were kept: summed from its cells (depth x length), the same interval
    old = {k: v for k, v in m.items() if k not in ("correct_by_length", "n_by_length")}
    assert passkey_cells(old)["64"] == cells["64"]


def test_ruler_metrics_keep_score_sums_and_the_average_takes_wilson_over_every_task():
    from ropeext.eval.ruler.run import summarize
    from ropeext.report.measures import ruler_cells

    recs = [
        {"task": t, "length": n, "score": s}
        for t, scores in (("niah_single_1", (1.0, 1.0, 0.0)), ("vt", (0.5, 1.0, 0.0)))
        for n in (256, 512)
        for s in scores
    ]
    m = summarize(recs, tasks=["niah_single_1", "vt"], lengths=[256, 512], subset="custom")
    assert m["score_sum"] == {"niah_single_1": {"256": 2.0, "512": 2.0}, "vt": {"256": 1.5, "512": 1.5}}
    cells = ruler_cells(m)
    lo, hi = I.wilson(3.5, 6)
    assert cells[256].value == pytest.approx(58.34) and cells[256].n == 6
    assert (cells[256].lo, cells[256].hi) == pytest.approx((100 * lo, 100 * hi), abs=0.01)
    assert cells["avg"].n == 12 and cells["avg"].method == "wilson"


def test_longbench_cells_bootstrap_enough_samples_and_say_so_when_they_cannot():
    from ropeext.eval.longbench import results
    from ropeext.report.measures import longbench_cells

    buckets = results.edge_buckets([0, 100, 200])
    answer = "    return value"
    recs = [
        {"pred": answer if i % 3 else "pass", "answers": [answer], "all_classes": None, "length": 50 + 100 * (i % 2)}
        for i in range(24)
    ]
    m = results.build_metrics({"lcc": (recs, buckets)}, variant="v")
    first = m["tasks"]["lcc"]["buckets"]["0-100"]
    assert first["n"] == 12 and len(first["scores"]) == 12 and all(0.0 <= s <= 1.0 for s in first["scores"])
    cells = longbench_cells(m)
    assert cells["0-100"].method == "bootstrap" and cells["0-100"].n == 12
    assert (cells["0-100"].lo, cells["0-100"].hi) == pytest.approx(
        tuple(100 * x for x in I.mean_bootstrap(first["scores"])), rel=1e-9
    )
    assert cells["0-100"].lo <= cells["0-100"].value <= cells["0-100"].hi and cells["Avg"].n == 24
    few = results.build_metrics({"lcc": (recs[:6], buckets)}, variant="v")  # 3 a bucket: Wilson at the mean
    assert longbench_cells(few)["0-100"].method == "wilson"
    for b in m["tasks"]["lcc"]["buckets"].values():  # a file without per-sample scores: n, and no interval
        b.pop("scores")
    bare = longbench_cells(m)["0-100"]
    assert bare.n == 12 and not bare.known


def test_openllm_accuracies_take_wilson_over_their_items_and_bits_per_byte_keeps_its_count():
    from ropeext.report.measures import openllm_cells

    def task(name, headline, score, n):
        return {"headline": headline, "score": score, "n_samples": {name: {"original": n + 5, "effective": n}}}

    m = {
        "task": "openllm",
        "variant": "v",
        "tasks": {
            "arc": task("arc", "acc_norm", 0.35, 20),
            "hella": task("hella", "acc", 0.5, 30),
            "code_ppl": task("code_ppl", "bits_per_byte", 6.3, 4),
            "broken": task("broken", "acc", None, 0),
        },
    }
    cells = openllm_cells(m)
    ref = binomtest(7, 20).proportion_ci(method="wilson")
    assert cells["arc"].value == pytest.approx(35.0) and cells["arc"].n == 20 and cells["arc"].unit == "items"
    assert (cells["arc"].lo, cells["arc"].hi) == pytest.approx((100 * ref.low, 100 * ref.high))
    assert cells["code_ppl"].value == 6.3 and cells["code_ppl"].n == 4 and not cells["code_ppl"].known
    assert "broken" not in cells
    # the average over the accuracy tasks (the table's Avg): Wilson at that mean over every task's items
    lo, hi = I.wilson((0.35 + 0.5) / 2 * 50, 50)
    assert cells["Avg"].value == pytest.approx(42.5) and cells["Avg"].n == 50 and cells["Avg"].unit == "items"
    assert (cells["Avg"].lo, cells["Avg"].hi) == pytest.approx((100 * lo, 100 * hi))
    # a file without lm-eval's sample counts: the value and no interval
    del m["tasks"]["arc"]["n_samples"]
    assert openllm_cells(m)["arc"].value == pytest.approx(35.0) and not openllm_cells(m)["arc"].known
    assert openllm_cells(m)["Avg"].n is None and not openllm_cells(m)["Avg"].known  # not hella's 30 alone


def test_bf16_cells_bootstrap_the_mean_deviation_over_enough_sequences():
    from ropeext.report.measures import bf16_cells

    rng = np.random.default_rng(1)
    per_seq = rng.uniform(0.2, 0.4, size=(12, 3))  # 12 sequences x shifts 0, 4, 16

    def setting(rows):
        shift = {"delta1": [0, 4, 16], "delta2": 16, "per_sequence_column": rows.tolist()}
        shift["column"] = {"mean": rows.mean(axis=0).tolist()}
        return {"shift": shift, "key_columns": {"delta1": 0}}

    cells = bf16_cells({"settings": {"bf16": setting(per_seq), "fp32": setting(per_seq[:3] * 1e-3)}})
    bf16 = cells["bf16.D_0_16"]
    assert bf16.value == pytest.approx(per_seq[:, 0].mean()) and bf16.n == 12 and bf16.method == "bootstrap"
    assert (bf16.lo, bf16.hi) == pytest.approx(I.mean_bootstrap(per_seq[:, 0]))
    fp32 = cells["fp32.D_0_16"]  # three sequences: the mean and its count, no interval
    assert fp32.n == 3 and not fp32.known and fp32.value == pytest.approx(1e-3 * per_seq[:3, 0].mean())


def test_the_evidence_line_counts_one_unit_in_the_singular():
    from ropeext.report.tables import evidence_line

    one = {"v": {"bf16.D_0_16": I.Interval(0.27, n=1, unit="sequences")}}
    assert "n = 1 sequence per cell; 1 cell has no interval" in evidence_line(one, "bf16-intervals.csv")
    two = {"v": {"bf16.D_0_16": I.Interval(0.27, n=2, unit="sequences")}}
    assert "n = 2 sequences per cell" in evidence_line(two, "bf16-intervals.csv")
