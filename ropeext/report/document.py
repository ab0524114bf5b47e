"""The report as one markdown document: where the models come from, what the numbers show, a section
per evaluation (table, figures, sentences), and where the numbers disagree with the papers.

``Report(config, inputs, out).write()`` reads the stages' files it is given (and nothing else), writes
the CSVs and figures into ``out`` and ``summary.md`` last. Each evaluation's section is one method; the
sentences and checks come from ``ropeext.report.findings``, the model descriptions from
``ropeext.report.provenance``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ropeext.io import atomic_path, read_json, write_text
from ropeext.report import findings as F
from ropeext.report import measures, provenance
from ropeext.report import references as published
from ropeext.report.plots import plot_heatmap_grid, plot_lines
from ropeext.report.summary import (_compare_geometry, _order, _section, load_json, parse_variant,
                                    phenomenon, ppl_table, variant_styles)
from ropeext.text import markdown_table


@dataclass
class Measured:
    """One evaluation's value at L' per variant, for the checks against the papers."""

    what: str
    kind: str
    target: int
    at: dict
    note: str = ""


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
        text += (f" Evaluated without fine-tuning (`noft`): {F.join(noft)}"
                 + (" (`none` without fine-tuning is the base model itself)" if "none" in noft else "") + ".")
    if tuned:
        parts = [f"{m} with the layout{'s' if len(lays) > 1 else ''} {F.join(lays)}" for m, lays in tuned.items()]
        text += f" Fine-tuned: {'; '.join(parts)}"
        missing = sorted({v for v in variants if parse_variant(v)["layout"] not in ("noft", "")} - set(trained))
        text += (" (see Fine-tuning)." if not missing else
                 f" (no training summary was given to the report for {', '.join(f'`{v}`' for v in missing)}).")
    else:
        text += " No variant was fine-tuned."
    return [text, "", "Variants are named `model-method-L'-layout`; `noft` is the method applied to the base model "
            "without fine-tuning."]


def paper_checks(measured: list[Measured], disturbance: dict, trained: dict, bf16_results: dict) -> list[F.Check]:
    """Every claim of the papers these numbers can test: DPRoPE's disturbance premise and its ranking per
    evaluation and group (without fine-tuning, then per fine-tuning layout); AnchorAttention's anchor vs
    full per evaluation, its training-time claim and its BF16 claims."""
    checks = []
    for m in measured:
        layouts = sorted({parse_variant(v)["layout"] for v in m.at} - {"noft"})
        groups = [("noft", f"at L' = {m.target} without fine-tuning")]
        groups += [(lay, f"at L' = {m.target} after fine-tuning with the {lay} layout") for lay in layouts]
        for layout, words in groups:
            metric = {parse_variant(v)["method"]: x for v, x in m.at.items() if parse_variant(v)["layout"] == layout}
            found = F.disturbance_check(disturbance.get(m.target, {}), metric, m.kind, m.what, words)
            checks += [found] if found else []
            checks += F.dprope_rank_check(metric, m.kind, m.what, words)
        pairs: dict[str, dict] = {}
        for v, x in m.at.items():
            info = parse_variant(v)
            pairs.setdefault(info["method"], {})[info["layout"]] = x
        checks += F.anchor_checks(pairs, m.kind, f"{m.what} at L' = {m.target}", m.note)
    seconds: dict[str, dict] = {}
    for v, s in trained.items():
        info = parse_variant(v)
        seconds.setdefault(info["method"], {})[info["layout"]] = s.get("seconds")
    checks += F.anchor_time_checks(seconds)
    checks += F.bf16_checks(bf16_results)
    return checks


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

    def lines_plot(self, series: dict, name: str, df: pd.DataFrame, **kw) -> Path:
        """One line per variant (a colour per method, a line style per layout)."""
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
        return {t: {v: F.within_and_at(vals, self.L, t, kind) for v, vals in F.of_target(series, t).items()}
                for t in self.targets}

    def extension(self, what: str, kind: str, pairs_by_target: dict, note: str = "",
                  where: dict | None = None) -> list[str]:
        """Per target: the hold/collapse sentence and the fine-tuning effect; recorded for the glance and checks."""
        lines = []
        for t, pairs in pairs_by_target.items():
            if not any(a is not None for _, a in pairs.values()):
                continue  # nothing measured past L up to this L'
            sentence = F.extension_sentence(what, F.verdicts(pairs, kind), self.L, t, kind, (where or {}).get(t, ""))
            at = {v: a for v, (_, a) in pairs.items()}
            effect = F.finetune_effect_sentence(at, kind, t)
            lines.append(sentence + (f" {effect}" if effect else "") + (f" {note}" if note else ""))
            self.glance.append(f"- {sentence}")
            plain = F.lower_first(what) if what.split()[0][1:].islower() else what  # "RULER average" stays
            self.measured.append(Measured(plain, kind, t, at, note))
        return lines

    # ------------------------------------------------------------------------- sections
    def ppl(self, paths: list) -> None:
        metrics = load_json(paths)
        df = ppl_table(metrics)
        self.variants |= set(df.index)
        lengths = [c for c in df.columns if isinstance(c, int)]
        self.save(df, "ppl.csv")
        self.lines_plot({v: (lengths, [row[c] for c in lengths]) for v, row in df.iterrows()}, "ppl.png", df,
                        xlabel="context length (tokens)", ylabel="perplexity", logx=True, logy=True,
                        title="Perplexity by context length", vlines=self.vlines)
        scored = [m.get("tokens_scored") for m in metrics if m.get("tokens_scored")]
        note = f"(Each perplexity scores the same {min(scored)} tokens at every length.)" if scored else ""
        body = ["Held-out test documents; at every length the same target tokens are scored, each with up to "
                "that many tokens of context (sliding window, `ropeext eval ppl`).", "",
                markdown_table(df[["method", "layout"] + lengths]), "", "![perplexity by length](ppl.png)", ""]
        body += self.extension("Perplexity", F.PPL, self.by_target(measures.length_series(df[lengths]), F.PPL), note)
        body.append("")
        for t in self.targets:
            body += phenomenon(df[lengths], self.L, t) + [""]
        self.sections += _section("Perplexity by context length", body)

    def compare(self, path) -> None:
        table = pd.read_csv(path)
        folder = Path(path).parent
        geometry = _compare_geometry(folder)
        suffix = folder.name.rsplit("-", 1)[-1]
        target = geometry.get("target_length") or (int(suffix) if suffix.isdigit() else None)
        if target is not None and {"method", "disturbance"} <= set(table.columns):
            self.disturbance[int(target)] = dict(zip(table["method"], table["disturbance"].astype(float)))
        table, found = published.disturbance_beside(table, geometry, self.refs)
        self.compared.extend(found)
        self.save(table, f"disturbance-{folder.name}.csv", index=False)
        body = ["Rotary-angle disturbance (KL from the pre-training angle distribution, mean over pairs; "
                "`ropeext compare`). DPRoPE interpolates only the pairs where that lowers the disturbance.", "",
                markdown_table(table.set_index(table.columns[0]), ".4g")]
        for png in sorted(folder.glob("*.png")):
            self.copy(png, self.out / f"{folder.name}-{png.name}")
            body += ["", f"![{png.stem}]({folder.name}-{png.name})"]
        self.sections += _section(f"RoPE disturbance ({folder.name})", body)

    def angles(self, png) -> None:
        png = Path(png)
        dest = self.copy(png, self.out / f"{png.parent.name}-{png.name}")
        self.sections += _section(f"Angle histograms ({png.parent.name})", [f"![angle heat map]({dest.name})"])

    def passkey(self, paths: list) -> None:
        from ropeext.eval.passkey import summary_table

        metrics = load_json(paths)
        df = _order(summary_table(metrics))
        self.variants |= set(df.index)
        self.save(df, "passkey.csv")
        series = measures.length_series(df)
        lengths = sorted({k for vals in series.values() for k in vals})
        self.lines_plot({v: (lengths, [series[v].get(k) for k in lengths]) for v in df.index}, "passkey_by_length.png",
                        df, xlabel="prompt length (tokens)", ylabel="accuracy (%)", logx=True,
                        title="Passkey retrieval by length", vlines=self.vlines, ylim=(-3, 103))
        by_name = {m["variant"]: m for m in metrics}
        panels = {}
        for v in df.index:
            m = by_name[v]
            grid = np.array([[np.nan if x is None else 100.0 * x for x in row] for row in m["grid"]], dtype=float)
            panels[F.label(v)] = (grid.T, [f"{d:g}" for d in m["depths"]], m["lengths"])
        self.add(plot_heatmap_grid(panels, self.out / "passkey_heatmaps.png", xlabel="length (tokens)",
                                   ylabel="key depth", title="Passkey accuracy (%): depth x length"))
        note = F.sample_note(measures.passkey_samples(metrics), "prompt")
        body = [markdown_table(df, ".1f"), "", "![passkey accuracy by length](passkey_by_length.png)", "",
                "![passkey heat maps](passkey_heatmaps.png)", ""]
        body += self.extension("Passkey accuracy", F.SCORE, self.by_target(series, F.SCORE), note)
        if note:
            self.caveats.append(f"Passkey: {F.lower_first(note)}")
        self.sections += _section("Passkey retrieval (accuracy %, rows: variants, columns: prompt length)", body)

    def longbench(self, paths: list) -> None:
        from ropeext.eval.longbench.results import table1

        metrics = load_json(paths)
        df = _order(table1(metrics, [m["variant"] for m in metrics]))
        self.variants |= set(df.index)
        self.save(df, "longbench.csv")
        by_name = {m["variant"]: m for m in metrics}
        series, xticks, tokens = {}, {}, True
        for v in df.index:
            buckets = measures.buckets_of(by_name[v])
            edged = by_name[v].get("unit") == "tokens" and all(hi for _, _, hi in buckets)
            tokens = tokens and edged
            xs = [hi if edged else i + 1 for i, (_, _, hi) in enumerate(buckets)]
            xticks.update({x: name for x, (name, _, _) in zip(xs, buckets)})
            avg = by_name[v].get("bucket_avg") or {}
            series[v] = (xs, [np.nan if avg.get(name) is None else avg[name] for name, _, _ in buckets])
        body = [markdown_table(df)]
        if xticks:
            self.lines_plot(series, "longbench_buckets.png", df, ylabel="score (x100)", logx=tokens, xticks=xticks,
                            xlabel="length bucket (tokens; plotted at its upper edge)" if tokens else "length bucket",
                            title="LongBench-style score by length bucket", vlines=self.vlines if tokens else None)
            body += ["", "![score by length bucket](longbench_buckets.png)"]
        pairs, where, counts = {}, {}, set()
        for t in self.targets:
            pairs[t] = {}
            for v in F.of_target(dict.fromkeys(df.index), t):
                found = measures.longbench_within_at(by_name[v], self.L, t)
                pairs[t][v] = (found["within"], found["at"])
                if found["bucket"]:
                    where[t] = (f" (bucket {found['bucket']} {found['unit']}, against the mean of "
                                f"{F.join(found['inside'])})")
                    counts.add(found["n"])
        counts = sorted(c for c in counts if c)
        note = ""
        if counts:
            n = f"{counts[0]}-{counts[-1]}" if len(counts) > 1 else str(counts[0])
            plural = "s" if counts[-1] > 1 else ""
            note = f"({n} sample{plural} per variant in that bucket.)"
            self.caveats.append(f"LongBench: {n} sample{plural} per variant in the longest bucket: one sample moves "
                                f"its score by up to {100 / counts[0]:.0f} points.")
        body += [""] + self.extension("LongBench score", F.SCORE, pairs, note, where)
        self.sections += _section("LongBench-E-style evaluation (score x100 per length bucket, Avg, Avg above the "
                                  "first bucket)", body + self.beside("longbench", df, metrics))

    def openllm(self, paths: list) -> None:
        from ropeext.eval.openllm import summary_table

        metrics = load_json(paths)
        df = _order(summary_table(metrics))
        self.variants |= set(df.index)
        self.save(df, "openllm.csv")
        body = [markdown_table(df)]
        avg = {v: x for v, x in df["Avg"].items() if pd.notna(x)} if "Avg" in df.columns else {}
        if avg:
            hi, lo = max(avg, key=avg.get), min(avg, key=avg.get)
            if avg[hi] == avg[lo]:
                sentence = f"Open LLM average: {avg[hi]:.1f} for {'every variant' if len(avg) > 1 else F.label(hi)}."
            else:
                sentence = (f"Open LLM average: highest `{F.label(hi)}` ({avg[hi]:.1f}), lowest `{F.label(lo)}` "
                            f"({avg[lo]:.1f}), a spread of {avg[hi] - avg[lo]:.1f} points.")
            body += ["", sentence]
            self.glance.append(f"- {sentence}")
        self.sections += _section("Open LLM tasks through lm-eval (accuracy x100; bits per byte as is)",
                                  body + self.beside("openllm", df, metrics))

    def ruler(self, paths: list) -> None:
        from ropeext.eval.ruler.report import ruler_table, ruler_task_heatmaps

        metrics = load_json(paths)
        df = _order(ruler_table(metrics))
        self.variants |= set(df.index)
        self.save(df, "ruler.csv")
        lengths = [c for c in df.columns if isinstance(c, int)]
        series = measures.length_series(df[lengths])
        self.lines_plot({v: (lengths, [series[v].get(k) for k in lengths]) for v in df.index}, "ruler_by_length.png",
                        df, xlabel="length (tokens)", ylabel="average over tasks (%)", logx=True, ylim=(-3, 103),
                        title="RULER-style average by length", vlines=self.vlines)
        maps = ruler_task_heatmaps(metrics, self.out / "ruler")
        self.written += maps
        body = [markdown_table(df, ".1f"), "", "![RULER average by length](ruler_by_length.png)", ""]
        body += [f"![{p.stem}](ruler/{p.name})" for p in maps[:4]] + [""]
        for t, pairs in self.by_target(series, F.SCORE).items():
            note = F.sample_note(measures.ruler_samples(metrics, t), "sample")
            body += self.extension("RULER average", F.SCORE, {t: pairs}, note)
            if note:
                self.caveats.append(f"RULER at L' = {t}: {F.lower_first(note)}")
        self.sections += _section("RULER-style suite (average over tasks, % by length; effective length)",
                                  body + self.beside("ruler", df, metrics))

    def bf16(self, paths: list) -> None:
        from ropeext.analysis.bf16 import summary_row
        from ropeext.analysis.plots import plot_key_columns

        rows, series = [], {}
        for m in load_json(paths):
            variant = m.get("variant") or Path(m.get("model", "")).name
            row = summary_row(m)
            rows.append({"variant": variant, **row})
            self.bf16_results[variant] = (row, m)
            for setting, res in (m.get("settings") or {}).items():
                pts = [(d, y) for d, y in zip(res["shift"]["delta1"], res["shift"]["column"]["mean"]) if y and y > 0]
                if pts:
                    series[f"{F.label(variant)}, {setting}"] = ([d for d, _ in pts], [y for _, y in pts])
        df = _order(pd.DataFrame(rows).set_index("variant"))
        self.variants |= set(df.index)
        self.save(df, "bf16.csv")
        keep = [c for c in df.columns if c.endswith(("D_0_16", "first_key_share")) or c == "bf16_over_fp32"]
        body = ["In exact arithmetic a shift of every position changes nothing; larger values mean BF16 "
                "breaks RoPE's relative-position property more (`ropeext analyze bf16`).", "",
                markdown_table(df[keep], ".3g"), ""]
        if series:
            styles = {n: {"linestyle": "-" if n.endswith(" bf16") else "--"} for n in series}
            self.add(plot_lines(series, self.out / "bf16_deviation.png", xlabel="position shift delta1",
                                ylabel="D(delta1, delta2)", logy=True, styles=styles,
                                title="Attention deviation under a position shift, by setting"))
            body += ["![deviation by shift](bf16_deviation.png)", ""]
        for variant in df.index:
            row, m = self.bf16_results[variant]
            if (m.get("settings") or {}).get("bf16", {}).get("key_columns"):
                png = self.add(plot_key_columns(m, self.out / "bf16" / f"{variant}-key_columns.png"))
                body += [f"![key columns of {variant}](bf16/{png.name})", ""]
            sentence = F.bf16_sentence(variant, row, m)
            body.append(sentence)
            self.glance.append(f"- BF16: {sentence}")
        self.sections += _section("BF16 relative-position deviation (D(0,16): attention change under a position "
                                  "shift)", body)

    # ------------------------------------------------------------------------- the document
    def write(self) -> list[Path]:
        self.out.mkdir(parents=True, exist_ok=True)
        inputs = self.inputs
        if inputs.get("ppl"):
            self.ppl(inputs["ppl"])
        for path in inputs.get("compare") or []:
            self.compare(path)
        for png in inputs.get("angles") or []:
            self.angles(png)
        for name in ("passkey", "longbench", "openllm", "ruler", "bf16"):
            if inputs.get(name):
                getattr(self, name)(inputs[name])

        checks = paper_checks(self.measured, self.disturbance, self.trained, self.bf16_results)
        short = [v for v, s in self.trained.items() if provenance.is_short_run(s, self.parameters)]
        if short:
            self.caveats.append(f"The fine-tuning of {', '.join(f'`{v}`' for v in short)} was a short run (see "
                                "Fine-tuning): comparisons after it show what so little training changes, not the "
                                "papers' setting.")
        self.caveats.append("The papers' numbers come from 7B-scale models fine-tuned on billions of tokens; a check "
                            "without fine-tuning tests the disturbance premise on the base model directly.")
        if checks:
            disagree = sum(c.agrees is False for c in checks)
            self.glance.append(f"- Against the papers: {disagree} of {len(checks)} checks disagree (see \"Where our "
                               "numbers disagree with the papers\").")

        md = [f"# ropeext report: {self.config['experiment']}", "",
              provenance.base_model_sentence(self.base_info, self.config), "",
              *extension_lines(self.config, self.variants, self.trained), ""]
        if self.glance:
            md += _section("What the numbers show", [F.thresholds_text(), "", *self.glance])
        md += _section("Fine-tuning", provenance.finetuning_lines(self.trained, self.parameters, F.label))
        if self.trained:
            self.save(provenance.training_table(self.trained), "finetuning.csv")
        md += self.sections
        md += _section("Where our numbers disagree with the papers", F.checks_lines(checks, self.caveats))
        if self.refs.tables or self.refs.claims:
            md += _section("Published reference values", published.summary_lines(self.refs, self.compared))
        self.add(write_text(self.out / "summary.md", "\n".join(md)))
        return self.written
