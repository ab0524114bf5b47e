"""What the numbers show, in sentences computed from them, and where they disagree with the papers.

Pure functions over plain tables. The thresholds are defined once, below (``thresholds_text`` states
them), and every sentence that applies one states it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ropeext.report.tables import parse_variant
from ropeext.rope.registry import METHODS
from ropeext.text import number

HOLD_PPL = 1.10
COLLAPSE_PPL = 2.0
HOLD_SCORE = 0.80
COLLAPSE_SCORE = 0.25
PPL_TIE = 0.01
DISTURBANCE_TIE = 0.01
BF16_BREAKS_RATIO = 10.0  # bf16 deviation at least this many times fp32's: "BF16 breaks RoPE"
ANCHOR_TIME_CLAIM = 0.5  # AnchorAttention: "reduces training time by over 50%"
ANCHOR_TIME_MARGIN = 0.1  # a wall-time ratio within 10% of the claim's is timing noise: not decided
DPROPE_METHODS = tuple(name for name, method in METHODS.items() if method.ours)  # the claims' own methods

# kind -> (what a lower value means, unit for sentences)
PPL, SCORE = "ppl", "score"


def thresholds_text() -> str:
    """The rules every finding below applies, stated once."""
    return (
        f"How the findings are judged: at L' a variant *holds up* when its perplexity is at most "
        f"{HOLD_PPL:.2f}x its perplexity at L (an accuracy or score: at least {HOLD_SCORE:.0%} of its mean within "
        f"L) and *collapses* at {COLLAPSE_PPL:.2f}x or more (a score: {COLLAPSE_SCORE:.0%} of it or less); "
        f"in between it *degrades*. Perplexities within {PPL_TIE:.0%} of each other and disturbances within "
        f"{DISTURBANCE_TIE:.0%} count as equal. `pi` names a method without fine-tuning, `pi/anchor` the same "
        "method fine-tuned with the anchor layout."
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
    past = sorted(k for k in vals if L < k <= target)
    if kind == PPL:
        within = vals[inside[-1]] if inside else None
    else:
        within = sum(vals[k] for k in inside) / len(inside) if inside else None
    at = vals[target] if target in vals else (vals[past[-1]] if past else None)
    return within, at


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


def best(values: dict[str, float | None], kind: str) -> list[str]:
    """Variants with the best value (lowest perplexity, highest score), ties included."""
    vals = {v: x for v, x in values.items() if x is not None}
    if not vals:
        return []
    if kind == PPL:
        top = min(vals.values())
        return [v for v, x in vals.items() if x <= top * (1 + PPL_TIE)]
    top = max(vals.values())
    return [v for v, x in vals.items() if x == top]


def better(a: float, b: float, kind: str) -> int:
    """+1 when ``a`` is clearly better than ``b``, -1 when clearly worse, 0 when tied."""
    if kind == PPL:
        if a < b / (1 + PPL_TIE):
            return 1
        return -1 if a > b * (1 + PPL_TIE) else 0
    return (a > b) - (a < b)


# ----------------------------------------------------------------------------- per-evaluation sentences
def extension_sentence(what: str, found: list[Verdict], L: int, target: int, kind: str, where: str = "") -> str:
    """'<what> at L' = .. against L = ..: holds up (...) for a (..), b (..); collapses (...) for c (..).
    Best at L': a (..).'"""

    def item(v: Verdict) -> str:
        if kind == PPL:
            return f"`{label(v.variant)}` ({v.ratio:.2f}x)"
        return f"`{label(v.variant)}` ({fmt(v.at, kind)} vs {fmt(v.within, kind)})"

    if kind == PPL:
        ranges = {
            "holds": f"at most {HOLD_PPL:.2f}x",
            "degrades": f"{HOLD_PPL:.2f}-{COLLAPSE_PPL:.2f}x",
            "collapses": f"{COLLAPSE_PPL:.2f}x or more",
        }
        head = f"{what} at L' = {target} against L = {L}{where}"
    else:
        ranges = {
            "holds": f"at least {HOLD_SCORE:.0%} of it",
            "degrades": f"{COLLAPSE_SCORE:.0%}-{HOLD_SCORE:.0%}",
            "collapses": f"{COLLAPSE_SCORE:.0%} of it or less",
        }
        head = f"{what} at L' = {target} against its mean within L = {L}{where}"
    clauses = []
    sign = 1 if kind == PPL else -1
    for verdict, words in (("holds", "holds up"), ("degrades", "degrades"), ("collapses", "collapses")):
        group = sorted((v for v in found if v.verdict == verdict), key=lambda v: sign * v.ratio)
        if group:
            clauses.append(f"{words} ({ranges[verdict]}) for {join([item(v) for v in group])}")
    failing = [v for v in found if v.verdict == "fails within L"]
    if failing:
        clauses.append(
            f"fails already within L (0 there, so it says nothing about extension) for "
            f"{join([f'`{label(v.variant)}`' for v in failing])}"
        )
    if not clauses:
        return f"{what}: no variant was measured both within L = {L} and past it up to L' = {target}."
    text = f"{head}: {'; '.join(clauses)}."
    top = best({v.variant: v.at for v in found}, kind)
    if top:
        word = "Lowest" if kind == PPL else "Best"
        value = fmt(next(v.at for v in found if v.variant == top[0]), kind)
        text += f" {word} at L': {join([f'`{label(v)}`' for v in top])} ({value})."
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


def sample_note(n: int | None, unit: str) -> str:
    """'From 3 prompts per length: one prompt moves the accuracy by 33 points.'"""
    if not n:
        return ""
    if n == 1:
        return f"From 1 {unit} per length: every value is 0 or 100."
    return f"From {n} {unit}s per length: one {unit} moves the value by {100 / n:.0f} points."


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
    tokens = (result.get("spec") or {}).get("length")
    n = result.get("num_sequences")
    return f"`{label(variant)}`: {'; '.join(parts)} ({n} sequences of {tokens} tokens)."


# ----------------------------------------------------------------------------- checks against the papers
@dataclass(frozen=True)
class Check:
    paper: str
    claim: str
    agrees: bool | None  # None: not testable with these numbers
    text: str


def disturbance_check(
    disturbance: dict[str, float], metric: dict[str, float | None], kind: str, what: str, group: str
) -> Check | None:
    """DPRoPE's premise: a method that disturbs the angle distribution less extends better.

    Every pair of methods whose disturbance differs (beyond DISTURBANCE_TIE) and whose ``metric``
    differs (beyond the tie rule) either orders as the premise predicts or against it; the check
    disagrees when any pair goes against it, and names both numbers of each such pair."""
    methods = [m for m in metric if m in disturbance and metric[m] is not None]
    if len(methods) < 2:
        return None
    agree, against = 0, []
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            lo, hi = (a, b) if disturbance[a] < disturbance[b] else (b, a)
            if disturbance[hi] - disturbance[lo] <= DISTURBANCE_TIE * max(abs(disturbance[hi]), 1e-300):
                continue
            order = better(metric[lo], metric[hi], kind)
            if order > 0:
                agree += 1
            elif order < 0:
                worse = "higher" if kind == PPL else "lower"
                against.append(
                    f"`{lo}` disturbs the angles less than `{hi}` ({disturbance[lo]:.3g} vs "
                    f"{disturbance[hi]:.3g}) but has {worse} {what} ({fmt(metric[lo], kind)} vs "
                    f"{fmt(metric[hi], kind)})"
                )
    if not agree and not against:
        return None
    by_d = ", ".join(f"`{m}`" for m in sorted(methods, key=lambda m: disturbance[m]))
    sign = 1 if kind == PPL else -1
    by_metric = ", ".join(f"`{m}`" for m in sorted(methods, key=lambda m: sign * metric[m]))
    head = (
        f"{group[0].upper()}{group[1:]}, {what}: {agree} of {agree + len(against)} method pairs order as the "
        "claim predicts "
        f"(disturbance, least first: {by_d}; {what}, best first: {by_metric})"
    )
    text = head + (f". Against it: {'; '.join(against)}." if against else ".")
    return Check("DPRoPE", "lower angle disturbance, better extension", not against, text)


def dprope_rank_check(metric: dict[str, float | None], kind: str, what: str, group: str) -> list[Check]:
    """DPRoPE reports the best results of the methods it compares (Tables 1, 8, 10)."""
    vals = {m: x for m, x in metric.items() if x is not None}
    ours = [m for m in DPROPE_METHODS if m in vals]
    others = [m for m in vals if m not in DPROPE_METHODS and m != "none"]
    if not ours or not others:
        return []
    out = []
    for m in ours:
        rank = 1 + sum(better(vals[o], vals[m], kind) > 0 for o in vals if o != m)
        top = best(vals, kind)
        text = (
            f"`{m}` ranks {rank} of {len(vals)} in {what} {group} ({fmt(vals[m], kind)}; best "
            f"{join([f'`{t}`' for t in top])} {fmt(vals[top[0]], kind)})."
        )
        out.append(Check("DPRoPE", "DPRoPE extends better than PI, YaRN and the rest", rank == 1, text))
    return out


def anchor_checks(values: dict[str, dict[str, float | None]], kind: str, what: str, n_note: str = "") -> list[Check]:
    """AnchorAttention: fine-tuning with the anchor layout does at least as well as with full attention
    (Tables 5-7). ``values``: method -> {layout: value}."""
    out = []
    for method, by_layout in values.items():
        a, f = by_layout.get("anchor"), by_layout.get("full")
        if a is None or f is None:
            continue
        order = better(a, f, kind)
        verdict = {1: "anchor better", 0: "a tie", -1: "anchor worse"}[order]
        text = (
            f"`{method}` fine-tuned with anchor vs full: {what} {fmt(a, kind)} vs {fmt(f, kind)} ({verdict})"
            + (f"; {lower_first(n_note.strip('(). '))}" if n_note else "")
            + "."
        )
        out.append(Check("AnchorAttention", "anchor at least as good as full attention", order >= 0, text))
    return out


def anchor_time_checks(seconds: dict[str, dict[str, float | None]], minimum: float) -> list[Check]:
    """AnchorAttention's 'over 50% less training time than full attention', from the runs' wall times.

    Wall time is not reproducible: the check decides only when both runs took at least ``minimum``
    seconds (``report.min_wall_seconds``) and their ratio lies more than ANCHOR_TIME_MARGIN (relative)
    away from the claim's ratio; otherwise it is inconclusive (``agrees`` None) and says why. The text
    never holds a wall time or their ratio, so identical runs give identical sentences."""
    out = []
    lo, hi = ANCHOR_TIME_CLAIM * (1 - ANCHOR_TIME_MARGIN), ANCHOR_TIME_CLAIM * (1 + ANCHOR_TIME_MARGIN)
    claim = "anchor cuts training time by over 50%"
    for method, by_layout in seconds.items():
        a, f = by_layout.get("anchor"), by_layout.get("full")
        if not a or not f:
            continue
        head = f"`{method}` fine-tuned with anchor vs full attention"
        if min(a, f) < minimum:
            text = (
                f"{head}: not decided, a run took less than {minimum:g} s of training (`report.min_wall_seconds`), "
                "too short for its wall time to tell the layouts apart from timing noise (start-up, caches, "
                "other jobs); the wall times are in finetuning.csv."
            )
            out.append(Check("AnchorAttention", claim, None, text))
            continue
        ratio = a / f
        if lo < ratio < hi:
            text = (
                f"{head}: not decided, anchor took between {lo:.2f}x and {hi:.2f}x the wall time of full attention, "
                f"within timing noise of the paper's {ANCHOR_TIME_CLAIM:.2f}x; the wall times are in finetuning.csv."
            )
            out.append(Check("AnchorAttention", claim, None, text))
            continue
        side = f"at most {lo:.2f}x" if ratio <= lo else f"at least {hi:.2f}x"
        text = (
            f"{head}: anchor took {side} the wall time of full attention (the paper: at most "
            f"{ANCHOR_TIME_CLAIM:.2f}x; both runs took at least {minimum:g} s, and a ratio within "
            f"{ANCHOR_TIME_MARGIN:.0%} of the paper's is not decided; the wall times are in finetuning.csv)."
        )
        out.append(Check("AnchorAttention", claim, ratio <= lo, text))
    return out


def bf16_checks(results: dict[str, tuple[dict, dict]]) -> list[Check]:
    """AnchorAttention: BF16 breaks RoPE's relative positions, mostly through the first token.
    ``results``: variant -> (summary_row, bf16_deviation.json); one check per claim over all variants."""
    ratios, firsts = {}, {}
    for variant, (row, result) in results.items():
        found = _bf16_numbers(row, result)
        if found is None:
            continue
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
        out.append(Check("AnchorAttention", "BF16 breaks RoPE's relative positions", not weak, text))
    if firsts:
        items = [
            f"`{label(v)}` {share:.1%}" + ("" if top == 0 else f" (largest: key {top})")
            for v, (top, share, _) in firsts.items()
        ]
        other = [v for v, (top, _, _) in firsts.items() if top != 0]
        text = (
            f"share of the first key in {next(iter(firsts.values()))[2]} in bf16: {join(items)}; the first key is "
            + (
                "the largest single contributor in every variant."
                if not other
                else f"not the largest contributor in {join([f'`{label(v)}`' for v in other])}."
            )
        )
        out.append(Check("AnchorAttention", "the deviation comes mostly from the first token", not other, text))
    return out


def checks_lines(checks: list[Check], caveats: list[str]) -> list[str]:
    """The report's section: disagreements first and plainly, then agreements, then the checks these
    numbers cannot decide (with why), then the caveats."""
    if not checks:
        return ["None of the papers' claims is testable with the evaluations of this run."]
    lines = []
    disagree = [c for c in checks if c.agrees is False]
    agree = [c for c in checks if c.agrees]
    undecided = [c for c in checks if c.agrees is None]
    decided = len(checks) - len(undecided)
    if disagree:
        lines += [f"**Disagreements** ({len(disagree)} of {decided} checks):", ""]
        lines += [f'- {c.paper}, "{c.claim}": {c.text}' for c in disagree] + [""]
    elif decided:
        lines += [f"None of the {decided} checks below disagrees with the papers.", ""]
    if agree:
        lines += [f"**Agreements** ({len(agree)} of {decided} checks):", ""]
        lines += [f'- {c.paper}, "{c.claim}": {c.text}' for c in agree] + [""]
    if undecided:
        lines += [f"**Inconclusive** ({len(undecided)} more, not counted above):", ""]
        lines += [f'- {c.paper}, "{c.claim}": {c.text}' for c in undecided] + [""]
    if caveats:
        lines += ["Caveats:", ""] + [f"- {c}" for c in caveats]
    return lines
