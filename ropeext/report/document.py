"""The report as one markdown document: provenance, findings, a section per evaluation, and the checks
against the papers. ``Report(config, inputs, out).write()`` reads only the files it is given; each
evaluation's section is written by its suite (``Suite.report(report, paths)``), the RoPE sections here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ropeext import job_warnings
from ropeext.io import atomic_path, read_json, write_text
from ropeext.report import findings as F
from ropeext.report import provenance
from ropeext.report import references as published
from ropeext.report.plots import facet_variants, plot_lines, with_band
from ropeext.report.tables import evidence_line, intervals_frame, parse_variant, section, variant_styles, with_intervals
from ropeext.suites import SUITES
from ropeext.text import markdown_table

# where the RoPE sections (disturbance, angle histograms) stand among the suites' (ropeext.suites, Suite.order)
ROPE_ORDER = 20


HEADLINE_COLUMNS = ("evaluation", "at", "length", "best", "value", "lo", "hi", "n", "not_told_apart")
SHORT_RUN = "the fine-tuning was a short run (see Fine-tuning), too short to test it"


@dataclass
class Measured:
    """One evaluation's value at L' per variant, with its interval (``evidence``) and its value within L, for the
    checks against the papers."""

    what: str
    kind: str
    target: int
    at: dict
    note: str = ""
    evidence: dict = field(default_factory=dict)  # variant -> Interval at L'
    within: dict = field(default_factory=dict)  # variant -> value within L


def _layouts(layouts: list[str]) -> str:
    return f"the layout{'s' if len(layouts) > 1 else ''} {F.join(layouts)}"


def extension_lines(config: dict, variants: set[str], trained: dict[str, dict]) -> list[str]:
    """Which methods were applied, which variants were evaluated without fine-tuning and which were fine-tuned
    (with which layouts): from the variants the report shows and the training summaries it was given."""
    L = config["model"]["train_length"]
    targets = config["extension"]["target_lengths"]
    infos = [parse_variant(v) for v in variants | set(trained)]
    order = {m: i for i, m in enumerate(config["extension"]["methods"])}
    noft = sorted({i["method"] for i in infos if i["layout"] == "noft"}, key=lambda m: (order.get(m, len(order)), m))
    tuned: dict[str, list[str]] = {}
    for i in sorted(infos, key=lambda i: (order.get(i["method"], len(order)), i["method"], i["layout"])):
        if i["layout"] not in ("noft", "") and i["layout"] not in tuned.setdefault(i["method"], []):
            tuned[i["method"]].append(i["layout"])
    tuned = {m: lays for m, lays in tuned.items() if lays}
    methods = F.join(config["extension"]["methods"])
    text = f"Extended from L = {L} to L' = {', '.join(map(str, targets))} with {methods}."
    if noft:
        text += (
            f" Evaluated without fine-tuning (`noft`): {F.join(noft)}"
            + (" (`none` without fine-tuning is the base model itself)" if "none" in noft else "")
            + "."
        )
    if tuned:
        if len(tuned) > 1 and len({tuple(lays) for lays in tuned.values()}) == 1:  # the same layouts: said once
            text += f" Fine-tuned: {F.join(list(tuned))}, each with {_layouts(next(iter(tuned.values())))}"
        else:
            text += f" Fine-tuned: {'; '.join(f'{m} with {_layouts(lays)}' for m, lays in tuned.items())}"
        missing = sorted({v for v in variants if parse_variant(v)["layout"] not in ("noft", "")} - set(trained))
        text += (
            " (see Fine-tuning)."
            if not missing
            else f" (no training summary was given to the report for {', '.join(f'`{v}`' for v in missing)})."
        )
    else:
        text += " No variant was fine-tuned."
    return [
        text,
        "",
        "Variants are named `model-method-L'-layout`; `noft` is the method applied to the base model "
        "without fine-tuning.",
    ]


def paper_checks(
    measured: list[Measured],
    disturbance: dict,
    trained: dict,
    bf16_results: dict,
    min_wall_seconds: float,
    short: set[str] | None = None,
) -> list[F.Check]:
    """Every claim of the papers these numbers can test: DPRoPE's disturbance premise and its ranking per
    evaluation and group (without fine-tuning, then per fine-tuning layout); AnchorAttention's anchor vs
    full per evaluation, its training-time claim (decided only on runs of at least ``min_wall_seconds``)
    and its BF16 claims. ``short``: the fine-tuned variants whose run was too short to test a claim about
    fine-tuning (their checks are inconclusive)."""
    short = short or set()
    checks = []
    for m in measured:
        layouts = sorted({parse_variant(v)["layout"] for v in m.at} - {"noft"})
        groups = [("noft", f"at L' = {m.target} without fine-tuning")]
        groups += [(lay, f"at L' = {m.target} after fine-tuning with the {lay} layout") for lay in layouts]
        for layout, words in groups:
            members = [v for v in m.at if parse_variant(v)["layout"] == layout]
            metric = {parse_variant(v)["method"]: m.evidence.get(v, m.at[v]) for v in members}
            within = {parse_variant(v)["method"]: m.within.get(v) for v in members}
            cut = SHORT_RUN if short & set(members) else ""
            found = F.disturbance_check(disturbance.get(m.target, {}), metric, m.kind, m.what, words, within, cut)
            checks += [found] if found else []
            checks += F.dprope_rank_check(metric, m.kind, m.what, words, within, cut)
        pairs: dict[str, dict] = {}
        inside: dict[str, dict] = {}
        cuts: dict[str, str] = {}
        for v, x in m.at.items():
            info = parse_variant(v)
            pairs.setdefault(info["method"], {})[info["layout"]] = m.evidence.get(v, x)
            inside.setdefault(info["method"], {})[info["layout"]] = m.within.get(v)
            if v in short and info["layout"] in ("anchor", "full"):
                cuts[info["method"]] = SHORT_RUN
        checks += F.anchor_checks(pairs, m.kind, f"{m.what} at L' = {m.target}", inside, cuts)
    seconds: dict[str, dict] = {}
    for v, s in trained.items():
        info = parse_variant(v)
        seconds.setdefault(info["method"], {})[info["layout"]] = s.get("seconds")
    checks += F.anchor_time_checks(seconds, min_wall_seconds)
    checks += F.bf16_checks(bf16_results)
    return checks


def headline_rows(measured: list[Measured], L: int) -> list[dict]:
    """The best variant per evaluation within L and at each L' (lowest perplexity, highest score): its value,
    95% interval and n where the cell has them, and the variants not told apart from it (``F.best``). Where
    every variant has the same value (all at 0, say) none is best: "(every variant equal)"."""
    rows, seen = [], set()
    for m in measured:
        for at, length, values in (
            ("L", L, m.within),
            ("L'", m.target, {v: m.evidence.get(v, x) for v, x in m.at.items()}),
        ):
            if (m.what, at, length) in seen:
                continue
            seen.add((m.what, at, length))
            top = F.best(values, m.kind)
            if not top:
                continue
            iv = F.as_interval(values[top[0]])
            plain = {F.as_interval(x).value for x in values.values()}
            if len(values) > 1 and len(plain) == 1:  # a tie of every variant (all at 0, say) has no best
                top = ["(every variant equal)", *sorted(values)]
            rows.append(
                {
                    "evaluation": m.what,
                    "at": at,
                    "length": length,
                    "best": top[0],
                    "value": iv.value,
                    "lo": iv.lo,
                    "hi": iv.hi,
                    "n": iv.n,
                    "not_told_apart": " ".join(top[1:]),
                }
            )
    return rows


def warnings_lines(records: list[dict]) -> list[str]:
    """The report's Warnings section: what each job warned about (ropeext.job_warnings records)."""
    if not records:
        return ["No job recorded a warning."]
    return [
        "What the jobs warned about (their own warnings and those about the inputs; library notices stay in "
        "the jobs' logs). A record stays until its job runs again.",
        "",
        *job_warnings.lines(records),
    ]


def compare_geometry(folder: Path) -> dict:
    """The geometry a `ropeext compare` folder was solved for (from its compare.json)."""
    f = folder / "compare.json"
    if not f.is_file():
        return {}
    solutions = json.loads(f.read_text()).get("solutions", {})
    first = next(iter(solutions.values()), {})
    return {k: first.get(k) for k in ("rope_theta", "head_dim", "train_length", "target_length")}


class Report:
    def __init__(self, config: dict, inputs: dict, out: Path):
        self.config, self.inputs, self.out = config, inputs, Path(out)
        self.L = config["model"]["train_length"]
        self.targets = config["extension"]["target_lengths"]
        self.vlines = {f"L={self.L}": self.L} | {f"L'={t}": t for t in self.targets}
        self.base_info = read_json(inputs["base_model"], "base model information") if inputs.get("base_model") else None
        self.trained = {Path(p).parent.name: read_json(p, "training summary") for p in inputs.get("training") or []}
        self.parameters = provenance.base_parameters(self.base_info)
        self.refs = published.load_references(inputs.get("references"))
        self.written: list[Path] = []
        self.compared: list = []
        self.sections: list[str] = []
        self.glance: list[str] = []
        self.measured: list[Measured] = []
        self.caveats: list[str] = []
        self.variants: set[str] = set()
        self.disturbance: dict[int, dict[str, float]] = {}
        self.bf16_results: dict[str, tuple[dict, dict]] = {}

    def precisions(self) -> dict[str, list[dict | None]]:
        """Each evaluation suite's ``precision`` records (one per metrics file; the BF16 analysis has its own)."""
        return {
            s.name: [read_json(p, f"{s.name} metrics").get("precision") for p in self.inputs[s.name]]
            for s in SUITES
            if s.section.startswith("eval.") and self.inputs.get(s.name)
        }

    # ------------------------------------------------------------------------- files
    def save(self, df: pd.DataFrame, name: str, index: bool = True) -> None:
        with atomic_path(self.out / name) as tmp:
            df.to_csv(tmp, index=index)
        self.written.append(self.out / name)

    def copy(self, src: Path, dest: Path) -> Path:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        self.written.append(dest)
        return dest

    def add(self, path: Path) -> Path:
        self.written.append(Path(path))
        return Path(path)

    def lines_plot(self, series: dict, name: str, df: pd.DataFrame, cells: dict | None = None, **kw) -> Path:
        """One line per variant (a colour per method, a line style per layout), at most eight per panel (by
        target length, then layout); a band where a point has a 95% interval: in ``cells`` ({variant: {x:
        Interval}}, as ``table`` takes them) or in ``df``'s `<x> lo`/`<x> hi` columns."""
        rows = {v: {str(k): x for k, x in row.items()} for v, row in df.iterrows()}
        for v, by_x in (cells or {}).items():
            for x, iv in by_x.items():
                if iv is not None and iv.known:
                    rows.setdefault(v, {}).update({f"{x} lo": iv.lo, f"{x} hi": iv.hi})
        series = {v: with_band(points, rows.get(v, {})) for v, points in series.items()}
        kw.setdefault("panels", facet_variants(list(series)))
        return self.add(plot_lines(series, self.out / name, styles=variant_styles(list(df.index)), **kw))

    # ------------------------------------------------------------------------- shared pieces
    def beside(self, benchmark: str, df: pd.DataFrame, metrics: list[dict], floatfmt: str = ".2f") -> list[str]:
        """Lines stating what produced our numbers, and the published values beside them where comparable."""
        found = published.beside_ours(benchmark, df, metrics, self.config, self.refs, floatfmt)
        self.compared.extend(found.comparisons)
        for name, frame in found.frames.items():
            self.save(frame, name)
        return ["", *found.lines]

    def by_target(self, series: dict, kind: str) -> dict:
        """{L': {variant: (value within L, value at L')}}."""
        return {
            t: {v: F.within_and_at(vals, self.L, t, kind) for v, vals in F.of_target(series, t).items()}
            for t in self.targets
        }

    def evidence_at(self, series: dict, cells: dict) -> dict:
        """{L': {variant: the Interval of the length that stands for L' (F.at_length)}}."""
        out: dict = {}
        for t in self.targets:
            out[t] = {}
            for v, vals in F.of_target(series, t).items():
                at = F.at_length(vals, self.L, t)
                if at is not None and (cells.get(v) or {}).get(at) is not None:
                    out[t][v] = cells[v][at]
        return out

    def table(
        self, df: pd.DataFrame, cells: dict, name: str, floatfmt: str = ".2f", shown: list | None = None
    ) -> list[str]:
        """Save ``df`` as ``name`` and its cells' intervals as the long-format ``<stem>-intervals.csv``; return the
        markdown table of the ``shown`` columns (default all; sampled cells as 'value [lo, hi]') and the line
        stating n and the interval's method."""
        self.save(df, name)
        companion = name.replace(".csv", "-intervals.csv")
        self.save(intervals_frame(cells), companion, index=False)
        line = evidence_line({v: c for v, c in cells.items() if v in df.index}, companion)
        table = with_intervals(df if shown is None else df[shown], cells, floatfmt)
        return [markdown_table(table, floatfmt)] + (["", line] if line else [])

    def extension(
        self,
        what: str,
        kind: str,
        pairs_by_target: dict,
        note: str = "",
        where: dict | None = None,
        evidence: dict | None = None,
    ) -> list[str]:
        """Per target: the hold/collapse sentence and the fine-tuning effect; recorded for the glance and checks.
        ``evidence``: {L': {variant: Interval at L'}}."""
        lines = []
        for t, pairs in pairs_by_target.items():
            if not any(a is not None for _, a in pairs.values()):
                continue  # nothing measured past L up to this L'
            ev = (evidence or {}).get(t, {})
            found = F.verdicts(pairs, kind)
            sentence = F.extension_sentence(what, found, self.L, t, kind, (where or {}).get(t, ""), ev)
            at = {v: a for v, (_, a) in pairs.items()}
            effect = F.finetune_effect_sentence(at, kind, t)
            lines.append(sentence + (f" {effect}" if effect else "") + (f" {note}" if note else ""))
            self.glance.append(f"- {sentence}")
            plain = F.lower_first(what) if what.split()[0][1:].islower() else what  # "RULER average" stays
            within = {v: w for v, (w, _) in pairs.items()}
            self.measured.append(Measured(plain, kind, t, at, note, ev, within))
        return lines

    # ------------------------------------------------------------------------- sections
    def compare(self, path) -> None:
        table = pd.read_csv(path)
        folder = Path(path).parent
        geometry = compare_geometry(folder)
        suffix = folder.name.rsplit("-", 1)[-1]
        target = geometry.get("target_length") or (int(suffix) if suffix.isdigit() else None)
        if target is not None and {"method", "disturbance"} <= set(table.columns):
            self.disturbance[int(target)] = dict(zip(table["method"], table["disturbance"].astype(float)))
        table, found = published.disturbance_beside(table, geometry, self.refs)
        self.compared.extend(found)
        self.save(table, f"disturbance-{folder.name}.csv", index=False)
        body = [
            "Rotary-angle disturbance (KL from the pre-training angle distribution, mean over pairs; "
            "`ropeext compare`). DPRoPE interpolates only the pairs where that lowers the disturbance.",
            "",
            markdown_table(table.set_index(table.columns[0]), ".4g"),
        ]
        for png in sorted(folder.glob("*.png")):
            self.copy(png, self.out / f"{folder.name}-{png.name}")
            body += ["", f"![{png.stem}]({folder.name}-{png.name})"]
        self.sections += section(f"RoPE disturbance ({folder.name})", body)

    def rope(self) -> None:
        for path in self.inputs.get("compare") or []:
            self.compare(path)
        for png in self.inputs.get("angles") or []:
            self.angles(png)

    def angles(self, png) -> None:
        png = Path(png)
        dest = self.copy(png, self.out / f"{png.parent.name}-{png.name}")
        self.sections += section(f"Angle histograms ({png.parent.name})", [f"![angle heat map]({dest.name})"])

    # ------------------------------------------------------------------------- the document
    def write(self) -> list[Path]:
        self.out.mkdir(parents=True, exist_ok=True)
        parts = [(s.order, lambda s=s: s.report(self, self.inputs[s.name])) for s in SUITES if self.inputs.get(s.name)]
        for _, part in sorted(parts + [(ROPE_ORDER, self.rope)], key=lambda p: p[0]):
            part()

        short = [v for v, s in self.trained.items() if provenance.is_short_run(s, self.parameters)]
        checks = paper_checks(
            self.measured,
            self.disturbance,
            self.trained,
            self.bf16_results,
            self.config["report"]["min_wall_seconds"],
            set(short),
        )
        if short:
            self.caveats.append(
                f"The fine-tuning of {', '.join(f'`{v}`' for v in short)} was a short run (see "
                "Fine-tuning): comparisons after it show what so little training changes, not the "
                "papers' setting."
            )
        self.caveats.append(
            "The papers' numbers come from 7B-scale models fine-tuned on billions of tokens; a check "
            "without fine-tuning tests the disturbance premise on the base model directly."
        )
        if checks:  # what the run can say leads the findings
            self.glance.insert(0, F.checks_glance(checks))
        # the best variant per evaluation within L and at L': headline.csv, the parent MLflow run's metrics
        headline = pd.DataFrame(headline_rows(self.measured, self.L), columns=list(HEADLINE_COLUMNS))
        self.save(headline, "headline.csv", index=False)

        md = [
            f"# ropeext report: {self.config['experiment']}",
            "",
            provenance.base_model_sentence(self.base_info, self.config),
            "",
            *([precision, ""] if (precision := provenance.precision_sentence(self.precisions())) else []),
            *extension_lines(self.config, self.variants, self.trained),
            "",
        ]
        warned = job_warnings.read_records(self.inputs.get("warnings"))
        if warned:
            count = sum(len(r["warnings"]) for r in warned)
            self.glance.append(f"- {count} warning{'s' if count > 1 else ''} from the jobs (see Warnings).")
        if self.glance:
            md += section("What the numbers show", [F.thresholds_text(), "", *self.glance])
        if self.inputs.get("warnings"):
            md += section("Warnings", warnings_lines(warned))
        md += section("Fine-tuning", provenance.finetuning_lines(self.trained, self.parameters, F.label))
        if self.trained:
            self.save(provenance.training_table(self.trained), "finetuning.csv")
        md += self.sections
        md += section("Where our numbers disagree with the papers", F.checks_lines(checks, self.caveats))
        if self.refs.tables or self.refs.claims:
            md += section("Published reference values", published.summary_lines(self.refs, self.compared))
        self.add(write_text(self.out / "summary.md", "\n".join(md)))
        return self.written
