"""What an evaluation suite declares (see ropeext.suites)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Figure:
    """An item of Snakemake's HTML report: a file that `ropeext report` writes into the report folder for the
    suite, across its variants (a figure, or ``<name>.html``: the page of its table ``<name>.csv``). The report
    rule declares it as a ``report()`` output in ``category`` with the caption workflow/report/<caption>."""

    file: str
    caption: str
    category: str


def no_inputs(config: dict) -> dict:
    return {}


def no_args(config: dict, input) -> str:
    return ""


@dataclass(frozen=True)
class Suite:
    name: str  # the report's --<name> option, <name>.csv
    section: str  # the config section ("eval.ppl"): its `variants` selects the models, a change re-runs the suite
    rule: str  # the workflow rule that evaluates one variant
    # the rule's `ropeext` command (a template filled in with shell-quoted values: {input.model}, {params.cfg},
    # {params.outdir}, {params.variant}, {params.args}, {threads})
    command: str
    report: Callable  # report(doc, paths): the suite's section of ropeext.report.document.Report
    order: int  # where its section stands in the report (the RoPE sections stand at 20)
    metrics: str = "metrics.json"  # the file the rule writes per variant, which the report reads
    # its items in Snakemake's HTML report (the report rule's outputs), by name: its table's page, its figures
    figures: dict[str, Figure] = field(default_factory=dict)
    # further files the suite's rule writes per variant besides `metrics` (rule outputs, not in the HTML report)
    variant_files: tuple[str, ...] = ()
    # config keys the command reads besides its section (an evaluation's precision, eval.dtype, among them)
    settings: tuple[str, ...] = ("seed",)
    inputs: Callable[[dict], dict] = no_inputs  # rule inputs besides the model, from the config
    # args(config, input): command arguments that depend on the config, as shell words (paths quoted)
    args: Callable = no_args
    # Snakemake's priority of its rule, 0-9 (below the data and fine-tuning jobs, workflow/rules/common.smk):
    # among the evaluations ready at once the higher start first. The suites that take longest go first, so
    # that the last jobs of a run on few cores end together rather than one running alone (on the demo's
    # 2 cores: perplexity, Open LLM, RULER, LongBench, passkey, BF16)
    priority: int = 0

    @property
    def folder(self) -> str:
        """Results sub-folder of its per-variant outputs: eval/ppl, analysis/bf16."""
        return f"{self.section.split('.')[0]}/{self.name}"

    def config(self, config: dict) -> dict:
        value = config
        for part in self.section.split("."):
            value = value[part]
        return value
