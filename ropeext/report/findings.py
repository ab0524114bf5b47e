"""What the numbers show, in sentences computed from them, and what they say about the papers' claims.

Pure functions over plain tables. The thresholds are defined once, below (``thresholds_text`` states
them), and every sentence that applies one states it. A check of a claim is *supported*, *contradicted* or
*inconclusive*: two values are told apart only when their 95% intervals (ropeext.report.intervals) do not
overlap, and a tie, a floor or a ceiling never supports anything.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from ropeext.report.intervals import LEVEL, Interval, separated
from ropeext.report.tables import parse_variant
from ropeext.rope.registry import METHODS
from ropeext.text import number

HOLD_PPL = 1.10
COLLAPSE_PPL = 2.0
HOLD_SCORE = 0.80
COLLAPSE_SCORE = 0.25
DISTURBANCE_TIE = 0.01
BF16_BREAKS_RATIO = 10.0  # bf16 deviation at least this many times fp32's: "BF16 breaks RoPE"
FIRST_TOKEN_SHARE = 0.5  # "mostly from the first token": the first key holds more than half of the deviation
ANCHOR_TIME_CLAIM = 0.5  # AnchorAttention: "reduces training time by over 50%"
ANCHOR_TIME_MARGIN = 0.1  # a wall-time ratio within 10% of the claim's is timing noise: not decided
DPROPE_METHODS = tuple(name for name, method in METHODS.items() if method.ours)  # the claims' own methods

# kind -> (what a lower value means, unit for sentences)
PPL, SCORE = "ppl", "score"
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
FLOOR, CEILING = 0.0, 100.0  # of an accuracy or score in percent


def thresholds_text() -> str:
    """The rules every finding below applies, stated once (the checks' own rules: ``check_rules_text``)."""
    return (
        f"How the findings are judged: at L' a variant *holds up* when its perplexity is at most "
        f"{HOLD_PPL:.2f}x its perplexity at L (an accuracy or score: at least {HOLD_SCORE:.0%} of its mean within "
        f"L) and *collapses* at {COLLAPSE_PPL:.2f}x or more (a score: {COLLAPSE_SCORE:.0%} of it or less); "
        f"in between it *degrades*; [lo, hi]: a {LEVEL}% interval. `pi` names a method without fine-tuning, "
        "`pi/anchor` the same method fine-tuned with the anchor layout."
    )


def check_rules_text() -> str:
    """How a check of a paper's claim is decided, stated once at the head of the checks."""
    return (
        f"How a claim is decided: perplexity intervals bootstrap the scored windows, accuracies take Wilson's "
        f"interval, LongBench scores bootstrap the samples. A claim is *supported* or *contradicted* only by values "
        "whose intervals do not overlap; overlapping intervals, every variant at 0 or at 100 (or at 0 already "
        "within L), a short fine-tuning run or a value without an interval leave it *inconclusive*: a tie never "
        "supports a claim. DPRoPE ranks first only when its interval beats every other method's; the "
        "angle-disturbance premise holds when most method pairs are told apart as it predicts and none against it "
        f"(disturbances within {DISTURBANCE_TIE:.0%} count as equal). BF16 breaks RoPE at a bf16/fp32 deviation "
        f"ratio of {BF16_BREAKS_RATIO:g}x or more. The deviation comes *mostly* from the first token when the first "
        f"key holds over {FIRST_TOKEN_SHARE:.0%} of it; less, with another key larger, contradicts it; the first "
        "key the largest contributor but with less than half is inconclusive."
    )


# ----------------------------------------------------------------------------- helpers
def label(variant: str) -> str:
    """'tiny-pi-1024-noft' -> 'pi'; 'tiny-pi-1024-anchor' -> 'pi/anchor'."""
    info = parse_variant(variant)
    if not info["method"]:
        return variant
    return info["method"] if info["layout"] == "noft" else f"{info['method']}/{info['layout']}"


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def join(items: list[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    if kind == PPL:
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def of_target(series: dict[str, dict], target: int) -> dict[str, dict]:
    """The variants extended to ``target``."""
    return {v: vals for v, vals in series.items() if parse_variant(v)["target"] == str(target)}


def within_and_at(values: dict, L: int, target: int, kind: str) -> tuple[float | None, float | None]:
    """(value within L, value at L'). Perplexity within L is the value at the longest measured length
    <= L; a score's is the mean over the measured lengths <= L. The value at L' is at the measured
    length L', else the longest measured length in (L, L']."""
    vals = {int(k): number(v) for k, v in values.items() if str(k).isdigit()}
    vals = {k: v for k, v in vals.items() if v is not None}
    inside = sorted(k for k in vals if k <= L)
    if kind == PPL:
        within = vals[inside[-1]] if inside else None
    else:
        within = sum(vals[k] for k in inside) / len(inside) if inside else None
    at = at_length(vals, L, target)
    return within, (vals[at] if at is not None else None)


def at_length(values: dict, L: int, target: int) -> int | None:
    """The measured length that stands for L' (see ``within_and_at``): L' itself, else the longest in (L, L']."""
    vals = {int(k) for k, v in values.items() if str(k).isdigit() and number(v) is not None}
    if target in vals:
        return target
    past = sorted(k for k in vals if L < k <= target)
    return past[-1] if past else None


@dataclass(frozen=True)
class Verdict:
    variant: str
    within: float | None
    at: float | None
    ratio: float | None
    verdict: str  # holds | degrades | collapses | fails within L | not measured


def classify(kind: str, within: float | None, at: float | None) -> tuple[float | None, str]:
    """(ratio at L' / within L, verdict) under the thresholds above."""
    if within is None or at is None:
        return None, "not measured"
    if kind == PPL:
        ratio = at / within if within > 0 else math.inf
        return ratio, "holds" if ratio <= HOLD_PPL else "collapses" if ratio >= COLLAPSE_PPL else "degrades"
    if within <= 0:
        return None, "fails within L"
    ratio = at / within
    return ratio, "holds" if ratio >= HOLD_SCORE else "collapses" if ratio <= COLLAPSE_SCORE else "degrades"


def verdicts(pairs: dict[str, tuple[float | None, float | None]], kind: str) -> list[Verdict]:
    """``pairs``: variant -> (within L, at L')."""
    return [Verdict(v, w, a, *classify(kind, w, a)) for v, (w, a) in pairs.items()]


def as_interval(value) -> Interval:
    """An Interval as it is; a bare number as a value without an interval."""
    return value if isinstance(value, Interval) else Interval(number(value))


def fmt_iv(value, kind: str) -> str:
    """'3.6 [3.4, 3.8]' (the value alone without an interval)."""
    iv = as_interval(value)
    if not iv.known:
        return fmt(iv.value, kind)
    return f"{fmt(iv.value, kind)} [{fmt(iv.lo, kind)}, {fmt(iv.hi, kind)}]"


def order(a, b, kind: str) -> int:
    """+1 when ``a`` is clearly better than ``b`` (lower perplexity, higher score; the 95% intervals do not
    overlap), -1 when clearly worse, 0 when not told apart (overlapping intervals, or either without one)."""
    side = separated(as_interval(a), as_interval(b))
    return -side if kind == PPL else side


def best(values: dict, kind: str) -> list[str]:
    """The variant with the best value (lowest perplexity, highest score) first, then every variant not told
    apart from it (intervals overlapping; without intervals: equal values)."""
    ivs = {v: as_interval(x) for v, x in values.items() if as_interval(x).value is not None}
    if not ivs:
        return []
    sign = 1 if kind == PPL else -1
    top = min(ivs, key=lambda v: sign * ivs[v].value)
    tied = [
        v
        for v, iv in ivs.items()
        if v != top and (order(ivs[top], iv, kind) == 0 if ivs[top].known and iv.known else iv.value == ivs[top].value)
    ]
    return [top] + sorted(tied, key=lambda v: sign * ivs[v].value)


def undecided_reason(values: dict, kind: str, within: dict | None = None) -> str | None:
    """Why these values can decide nothing, or None: every one at 0 already within L, every one at the floor or
    at the ceiling at L', or one without an interval."""
    ivs = {k: as_interval(x) for k, x in values.items()}
    if kind == SCORE:
        inside = [number(w) for w in (within or {}).values()]
        if inside and all(w is not None and w <= FLOOR for w in inside):
            return "every variant compared scores 0 already within L: the task is beyond them at any length"
        if all(iv.value is not None and iv.value <= FLOOR for iv in ivs.values()):
            return "every variant compared scores 0 at L' (the floor)"
        if all(iv.value is not None and iv.value >= CEILING for iv in ivs.values()):
            return "every variant compared scores 100 at L' (the ceiling)"
    missing = [k for k, iv in ivs.items() if not iv.known]
    if missing:
        return f"no {LEVEL}% interval for {join([f'`{m}`' for m in missing])} (no per-sample records, or too few)"
    return None


# ----------------------------------------------------------------------------- per-evaluation sentences
def extension_sentence(
    what: str, found: list[Verdict], L: int, target: int, kind: str, where: str = "", evidence: dict | None = None
) -> str:
    """'<what> at L' = .. against L = ..: holds up for a (..), b (..); collapses for c (..). Best at L': a
    (.. [lo, hi]), not told apart from b.' The verdicts' thresholds are stated once (``thresholds_text``);
    ``evidence``: variant -> Interval at L'."""

    def item(v: Verdict) -> str:
        if kind == PPL:
            return f"`{label(v.variant)}` ({v.ratio:.2f}x)"
        return f"`{label(v.variant)}` ({fmt(v.at, kind)} vs {fmt(v.within, kind)})"

    if kind == PPL:
        head = f"{what} at L' = {target} against L = {L}{where}"
    else:
        head = f"{what} at L' = {target} against its mean within L = {L}{where}"
    clauses = []
    sign = 1 if kind == PPL else -1
    for verdict, words in (("holds", "holds up"), ("degrades", "degrades"), ("collapses", "collapses")):
        group = sorted((v for v in found if v.verdict == verdict), key=lambda v: sign * v.ratio)
        if group:
            clauses.append(f"{words} for {join([item(v) for v in group])}")
    failing = [v for v in found if v.verdict == "fails within L"]
    if failing:
        clauses.append(
            f"fails already within L (0 there, so it says nothing about extension) for "
            f"{join([f'`{label(v.variant)}`' for v in failing])}"
        )
    if not clauses:
        return f"{what}: no variant was measured both within L = {L} and past it up to L' = {target}."
    text = f"{head}: {'; '.join(clauses)}."
    ev = {v.variant: (evidence or {}).get(v.variant, v.at) for v in found if v.at is not None}
    top = best(ev, kind)
    if len(top) > 1 and len(top) == len(ev):
        text += " At L' no variant is told apart from the best."
    elif top:
        word = "Lowest" if kind == PPL else "Best"
        text += f" {word} at L': `{label(top[0])}` ({fmt_iv(ev[top[0]], kind)})"
        if len(top) > 1:
            text += f", not told apart from {join([f'`{label(v)}`' for v in top[1:]])}"
        text += "."
    return text


def finetune_effect_sentence(at: dict[str, float | None], kind: str, target: int) -> str | None:
    """Each fine-tuned variant at L' against its method without fine-tuning (where both were measured)."""
    noft = {parse_variant(v)["method"]: x for v, x in at.items() if parse_variant(v)["layout"] == "noft"}
    parts = []
    for v, x in at.items():
        info = parse_variant(v)
        base = noft.get(info["method"])
        if info["layout"] == "noft" or x is None or base is None:
            continue
        if kind == PPL:
            change = f"{100 * (x / base - 1):+.0f}%" if base > 0 else "n/a"
        else:
            change = f"{x - base:+.0f} points"
        parts.append(f"`{label(v)}` {fmt(x, kind)} vs {fmt(base, kind)} without fine-tuning ({change})")
    if not parts:
        return None
    return f"At L' = {target} after fine-tuning: {join(parts)}."


def _bf16_numbers(row: dict, result: dict) -> tuple[dict, str, float | None, float | None] | None:
    """(key columns, 'D(d1, d2)', its bf16 and fp32 values) of a bf16 result; None without a bf16 setting."""
    bf = (result.get("settings") or {}).get("bf16")
    if not bf:
        return None
    cols = bf["key_columns"]
    d1, d2 = cols["delta1"], cols["delta2"]
    return cols, f"D({d1}, {d2})", number(row.get(f"bf16.D_{d1}_{d2}")), number(row.get(f"fp32.D_{d1}_{d2}"))


def bf16_sentence(variant: str, row: dict, result: dict) -> str:
    """Deviation under a position shift in bf16 against fp32, and the first key's part in it."""
    found = _bf16_numbers(row, result)
    if found is None:
        return f"`{label(variant)}`: no bf16 setting was measured."
    key_cols, head, bf_d, fp_d = found
    parts = []
    if bf_d is not None and fp_d is not None and fp_d > 0:
        parts.append(
            f"a position shift changes attention by {head} = {bf_d:.3g} in bf16 against {fp_d:.3g} in fp32 "
            f"({bf_d / fp_d:.3g}x)"
        )
    elif bf_d is not None:
        parts.append(f"a position shift changes attention by {head} = {bf_d:.3g} in bf16 (fp32 not measured)")
    share = number(key_cols.get("first_share"))
    if share is not None:
        top = (key_cols.get("top") or [{}])[0].get("key")
        largest = "the largest single contributor" if top == 0 else f"not the largest contributor (key {top} is)"
        parts.append(f"the first key accounts for {share:.1%} of it in bf16, {largest}")
    return f"`{label(variant)}`: {'; '.join(parts)} ({_measured_on(result)})."


def _measured_on(result: dict) -> str:
    """'3 sequences of 1024 tokens' of a bf16 result; one sequence gives no interval, and says so."""
    tokens = (result.get("spec") or {}).get("length")
    n = result.get("num_sequences")
    if n == 1:
        return f"1 sequence of {tokens} tokens, so no interval"
    return f"{n} sequences of {tokens} tokens"


# ----------------------------------------------------------------------------- checks against the papers
@dataclass(frozen=True)
class Check:
    paper: str
    claim: str
    outcome: str  # supported | contradicted | inconclusive (the text says why)
    text: str
    reason: str = ""  # why it cannot be decided however its values compare (a short run; all at 0); ends the text

    def __post_init__(self):
        if self.outcome not in (SUPPORTED, CONTRADICTED, INCONCLUSIVE):
            raise ValueError(f"Check.outcome: {self.outcome!r} is not supported, contradicted or inconclusive")

    @property
    def agrees(self) -> bool | None:
        """True: supported; False: contradicted; None: inconclusive."""
        return {SUPPORTED: True, CONTRADICTED: False}.get(self.outcome)

    @property
    def head(self) -> str:
        """What was compared: the text without its reason (the whole text when it has none)."""
        return self.text.removesuffix(_undecided_tail(self.reason)) if self.reason else self.text


def _undecided_tail(reason: str) -> str:
    return f": not decided, {reason}."


def _undecided(paper: str, claim: str, head: str, reason: str) -> Check:
    """A check the run cannot decide for ``reason`` (a short fine-tuning run, say), whatever its numbers."""
    return Check(paper, claim, INCONCLUSIVE, head + _undecided_tail(reason), reason)


def disturbance_check(
    disturbance: dict[str, float],
    metric: dict,
    kind: str,
    what: str,
    group: str,
    within: dict | None = None,
    short: str = "",
) -> Check | None:
    """DPRoPE's premise: a method that disturbs the angle distribution less extends better.

    Every pair of methods whose disturbance differs (beyond DISTURBANCE_TIE) is told apart by ``metric``
    (method -> Interval at L') as the premise predicts, against it, or not at all (overlapping intervals).
    Contradicted when any pair goes against it; supported when a majority of the pairs go as it predicts;
    otherwise inconclusive. ``within``: method -> value within L (a score at 0 there decides nothing);
    ``short``: why the group's fine-tuning cannot test the claim ("" when it can)."""
    claim = "lower angle disturbance, better extension"
    metric = {m: as_interval(x) for m, x in metric.items()}
    methods = [m for m in metric if m in disturbance and metric[m].value is not None]
    if len(methods) < 2:
        return None
    pairs = []
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            lo, hi = (a, b) if disturbance[a] < disturbance[b] else (b, a)
            if disturbance[hi] - disturbance[lo] > DISTURBANCE_TIE * max(abs(disturbance[hi]), 1e-300):
                pairs.append((lo, hi))
    if not pairs:
        return None
    head = f"{group[0].upper()}{group[1:]}, {what}"
    inside = within and {m: within.get(m) for m in methods}
    reason = short or undecided_reason({m: metric[m] for m in methods}, kind, inside)
    if reason:
        return _undecided("DPRoPE", claim, head, reason)
    agree, against = 0, []
    for lo, hi in pairs:
        side = order(metric[lo], metric[hi], kind)
        if side > 0:
            agree += 1
        elif side < 0:
            worse = "higher" if kind == PPL else "lower"
            against.append(
                f"`{lo}` disturbs the angles less than `{hi}` ({disturbance[lo]:.3g} vs {disturbance[hi]:.3g}) but has "
                f"{worse} {what} ({fmt_iv(metric[lo], kind)} vs {fmt_iv(metric[hi], kind)})"
            )
    by_d = ", ".join(f"`{m}`" for m in sorted(methods, key=lambda m: disturbance[m]))
    sign = 1 if kind == PPL else -1
    by_metric = ", ".join(f"`{m}`" for m in sorted(methods, key=lambda m: sign * metric[m].value))
    tied = len(pairs) - agree - len(against)
    text = (
        f"{head}: of {len(pairs)} method pairs, {agree} are told apart as the claim predicts, {len(against)} against "
        f"it and {tied} not told apart (disturbance, least first: {by_d}; {what}, best first: {by_metric})"
    )
    if against:
        return Check("DPRoPE", claim, CONTRADICTED, text + f". Against it: {'; '.join(against)}.")
    if 2 * agree > len(pairs):
        return Check("DPRoPE", claim, SUPPORTED, text + ".")
    return Check("DPRoPE", claim, INCONCLUSIVE, text + ": too few pairs told apart to support it.")


def dprope_rank_check(
    metric: dict, kind: str, what: str, group: str, within: dict | None = None, short: str = ""
) -> list[Check]:
    """DPRoPE reports the best results of the methods it compares (Tables 1, 8, 10): each of its methods is
    supported when its interval is clearly better than every other method's, contradicted when another method's
    is clearly better than its own, inconclusive otherwise. ``metric``: method -> Interval at L'."""
    claim = "DPRoPE extends better than PI, YaRN and the rest"
    vals = {m: as_interval(x) for m, x in metric.items() if as_interval(x).value is not None}
    ours = [m for m in DPROPE_METHODS if m in vals]
    others = [m for m in vals if m not in DPROPE_METHODS]
    if not ours or not [o for o in others if o != "none"]:
        return []
    sign = 1 if kind == PPL else -1
    top = min(vals, key=lambda v: sign * vals[v].value)
    reason = short or undecided_reason(vals, kind, within and {m: within.get(m) for m in vals})
    out = []
    for m in ours:
        rank = 1 + sum(sign * vals[o].value < sign * vals[m].value for o in vals if o != m)
        head = f"`{m}` ranks {rank} of {len(vals)} in {what} {group} ({fmt_iv(vals[m], kind)}" + (
            f"; best `{top}` {fmt_iv(vals[top], kind)})" if top != m else ")"
        )
        if reason:
            out.append(_undecided("DPRoPE", claim, head, reason))
            continue
        above = [o for o in others if order(vals[o], vals[m], kind) > 0]
        below = [o for o in others if order(vals[m], vals[o], kind) > 0]
        if above:
            text = f"{head}: {join([f'`{o}`' for o in above])} clearly better."
            out.append(Check("DPRoPE", claim, CONTRADICTED, text))
        elif len(below) == len(others):
            out.append(Check("DPRoPE", claim, SUPPORTED, f"{head}: clearly better than every other method."))
        else:
            level = [o for o in others if o not in below]
            text = f"{head}: not told apart from {join([f'`{o}`' for o in level])}."
            out.append(Check("DPRoPE", claim, INCONCLUSIVE, text))
    return out


def anchor_checks(
    values: dict[str, dict], kind: str, what: str, within: dict | None = None, short: dict | None = None
) -> list[Check]:
    """AnchorAttention: fine-tuning with the anchor layout does at least as well as with full attention
    (Tables 5-7). ``values``: method -> {layout: Interval}; ``within``: method -> {layout: value within L};
    ``short``: method -> why its fine-tuning cannot test the claim. Supported only when anchor is clearly better
    (a tie is no evidence), contradicted when full attention is clearly better, inconclusive otherwise."""
    claim = "anchor at least as good as full attention"
    out = []
    for method, by_layout in values.items():
        a, f = by_layout.get("anchor"), by_layout.get("full")
        if a is None or f is None or as_interval(a).value is None or as_interval(f).value is None:
            continue
        head = f"`{method}` fine-tuned with anchor vs full: {what} {fmt_iv(a, kind)} vs {fmt_iv(f, kind)}"
        inside = {k: v for k, v in ((within or {}).get(method) or {}).items() if k in ("anchor", "full")}
        reason = (short or {}).get(method) or undecided_reason({"anchor": a, "full": f}, kind, inside)
        if reason:
            out.append(_undecided("AnchorAttention", claim, head, reason))
            continue
        side = order(a, f, kind)
        outcome = {1: SUPPORTED, 0: INCONCLUSIVE, -1: CONTRADICTED}[side]
        verdict = {1: "anchor clearly better", 0: "not told apart", -1: "anchor clearly worse"}[side]
        out.append(Check("AnchorAttention", claim, outcome, f"{head} ({verdict})."))
    return out


def anchor_time_checks(seconds: dict[str, dict[str, float | None]], minimum: float) -> list[Check]:
    """AnchorAttention's 'over 50% less training time than full attention', from the runs' wall times.

    Wall time is not reproducible: the check decides only when both runs took at least ``minimum``
    seconds (``report.min_wall_seconds``) and their ratio lies more than ANCHOR_TIME_MARGIN (relative)
    away from the claim's ratio; otherwise it is inconclusive and says why. The text never holds a wall
    time or their ratio, so identical runs give identical sentences."""
    out = []
    lo, hi = ANCHOR_TIME_CLAIM * (1 - ANCHOR_TIME_MARGIN), ANCHOR_TIME_CLAIM * (1 + ANCHOR_TIME_MARGIN)
    claim = "anchor cuts training time by over 50%"
    for method, by_layout in seconds.items():
        a, f = by_layout.get("anchor"), by_layout.get("full")
        if not a or not f:
            continue
        head = f"`{method}` fine-tuned with anchor vs full attention"
        if min(a, f) < minimum:
            reason = (
                f"a run took less than {minimum:g} s of training (`report.min_wall_seconds`), too short for its "
                "wall time to tell the layouts apart from timing noise (start-up, caches, other jobs); the wall "
                "times are in finetuning.csv"
            )
            out.append(_undecided("AnchorAttention", claim, head, reason))
            continue
        ratio = a / f
        if lo < ratio < hi:
            text = (
                f"{head}: not decided, anchor took between {lo:.2f}x and {hi:.2f}x the wall time of full attention, "
                f"within timing noise of the paper's {ANCHOR_TIME_CLAIM:.2f}x; the wall times are in finetuning.csv."
            )
            out.append(Check("AnchorAttention", claim, INCONCLUSIVE, text))
            continue
        side = f"at most {lo:.2f}x" if ratio <= lo else f"at least {hi:.2f}x"
        text = (
            f"{head}: anchor took {side} the wall time of full attention (the paper: at most "
            f"{ANCHOR_TIME_CLAIM:.2f}x; both runs took at least {minimum:g} s, and a ratio within "
            f"{ANCHOR_TIME_MARGIN:.0%} of the paper's is not decided; the wall times are in finetuning.csv)."
        )
        out.append(Check("AnchorAttention", claim, SUPPORTED if ratio <= lo else CONTRADICTED, text))
    return out


def bf16_checks(results: dict[str, tuple[dict, dict]]) -> list[Check]:
    """AnchorAttention: BF16 breaks RoPE's relative positions, mostly through the first token.
    ``results``: variant -> (summary_row, bf16_deviation.json); one check per claim over all variants."""
    ratios, firsts, measured = {}, {}, set()
    for variant, (row, result) in results.items():
        found = _bf16_numbers(row, result)
        if found is None:
            continue
        measured.add(_measured_on(result))
        cols, head, bf_d, fp_d = found
        if bf_d is not None and fp_d is not None and fp_d > 0:
            ratios[variant] = (bf_d, fp_d, head)
        top = (cols.get("top") or [{}])[0].get("key")
        share = number(cols.get("first_share"))
        if top is not None and share is not None:
            firsts[variant] = (top, share, head)
    out = []
    if ratios:
        items = [f"`{label(v)}` {b:.3g} vs {f:.3g} ({b / f:.3g}x)" for v, (b, f, _) in ratios.items()]
        weak = [v for v, (b, f, _) in ratios.items() if b / f < BF16_BREAKS_RATIO]
        text = (
            f"{next(iter(ratios.values()))[2]} in bf16 against fp32 (counted as breaking at "
            f"{BF16_BREAKS_RATIO:g}x or more): {join(items)}"
            + (f"; below that: {join([f'`{label(v)}`' for v in weak])}." if weak else ".")
        )
        outcome = CONTRADICTED if weak else SUPPORTED
        out.append(Check("AnchorAttention", "BF16 breaks RoPE's relative positions", outcome, text))
    if firsts:
        out.append(first_token_check(firsts))
    on = f" Each variant measured on {join(sorted(measured))}."  # what the outcome stands on
    return [Check(c.paper, c.claim, c.outcome, c.text + on) for c in out]


def first_token_check(firsts: dict[str, tuple[int, float, str]]) -> Check:
    """'The deviation comes mostly from the first token': supported when the first key holds over
    FIRST_TOKEN_SHARE of it in every variant; contradicted when in some variant it holds less and another key
    contributes more; otherwise (the first key the largest single contributor, with less than half) inconclusive.
    ``firsts``: variant -> (largest contributor's key, first key's share, 'D(d1, d2)')."""
    items = [
        f"`{label(v)}` {share:.1%}" + ("" if top == 0 else f" (largest: key {top})")
        for v, (top, share, _) in firsts.items()
    ]
    head = f"share of the first key in {next(iter(firsts.values()))[2]} in bf16: {join(items)}"
    elsewhere = [v for v, (top, share, _) in firsts.items() if top != 0 and share <= FIRST_TOKEN_SHARE]
    minor = [v for v, (top, share, _) in firsts.items() if top == 0 and share <= FIRST_TOKEN_SHARE]
    claim = "the deviation comes mostly from the first token"
    if elsewhere:
        names = join([f"`{label(v)}`" for v in elsewhere])
        text = f"{head}; under half, and another key is larger, in {names}."
        return Check("AnchorAttention", claim, CONTRADICTED, text)
    if minor:
        names = join([f"`{label(v)}`" for v in minor])
        text = (
            f"{head}; not decided: in {names} the first key is the largest single contributor but holds no more "
            f"than {FIRST_TOKEN_SHARE:.0%}, so 'mostly' is not shown."
        )
        return Check("AnchorAttention", claim, INCONCLUSIVE, text)
    return Check("AnchorAttention", claim, SUPPORTED, f"{head}: over {FIRST_TOKEN_SHARE:.0%} in every variant.")


def outcome_counts(checks: list[Check]) -> dict[str, int]:
    return {o: sum(c.outcome == o for c in checks) for o in (CONTRADICTED, SUPPORTED, INCONCLUSIVE)}


def checks_glance(checks: list[Check]) -> str:
    """One line for the top of the report: which claims the run decides, and how many checks it cannot."""
    counts = outcome_counts(checks)
    parts = []
    for outcome in (CONTRADICTED, SUPPORTED):
        claims = list(dict.fromkeys(f'"{c.claim}"' for c in checks if c.outcome == outcome))
        if claims:
            parts.append(f"{outcome} {'; '.join(claims)}")
    return (
        f"- Against the papers: {counts[CONTRADICTED]} of {len(checks)} checks contradict, {counts[SUPPORTED]} "
        f"support, {counts[INCONCLUSIVE]} inconclusive" + (f" ({'; '.join(parts)})" if parts else "") + "."
    )


def checks_lines(checks: list[Check], caveats: list[str]) -> list[str]:
    """The report's section: contradicted checks first and plainly, then supported ones, then the checks these
    numbers cannot decide (each says why), then the caveats."""
    if not checks:
        return ["None of the papers' claims is testable with the evaluations of this run."]
    counts = outcome_counts(checks)
    lines = [
        check_rules_text(),
        "",
        f"{len(checks)} checks: {counts[CONTRADICTED]} contradicted, {counts[SUPPORTED]} supported, "
        f"{counts[INCONCLUSIVE]} inconclusive.",
        "",
    ]
    for outcome, title in ((CONTRADICTED, "Contradicted"), (SUPPORTED, "Supported"), (INCONCLUSIVE, "Inconclusive")):
        found = [c for c in checks if c.outcome == outcome]
        if found:
            lines += [f"**{title}** ({len(found)}):", ""] + _check_items(found) + [""]
    if caveats:
        lines += ["Caveats:", ""] + [f"- {c}" for c in caveats]
    return lines


def _check_items(checks: list[Check]) -> list[str]:
    """One item per check; the checks that one reason leaves undecided whatever their values (two or more: a short
    fine-tuning run, every variant at 0) come last, under one item that states the reason once. What the
    intervals decided or left open reads first."""
    shared = Counter(c.reason for c in checks if c.reason)
    grouped = [reason for reason, n in shared.items() if n > 1]
    lines = [f'- {c.paper}, "{c.claim}": {c.text}' for c in checks if c.reason not in grouped]
    for reason in grouped:
        members = [c for c in checks if c.reason == reason]
        lines.append(f"- Not decided, {reason} ({len(members)}):")
        lines += [f'  - {c.paper}, "{c.claim}": {c.head}.' for c in members]
    return lines
