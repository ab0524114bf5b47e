# Config validation, path helpers, job commands and resources, and the variant grid shared by every rule file.
import hashlib
import json
import os
import shlex
import sys
from types import SimpleNamespace

from snakemake.utils import min_version, validate

min_version("9.0")

REPO_ROOT = workflow.basedir  # the Snakefile's folder: the repository root
sys.path.insert(0, REPO_ROOT)  # the package of this checkout, installed or not


from ropeext.checks import raise_problems  # noqa: E402
from ropeext.config import finetuned_methods, load_schema, resolve_config, scaling_methods, selected_models  # noqa: E402
from ropeext.eval.longbench.run import embedded_windows  # noqa: E402
from ropeext.rope.registry import METHODS as METHOD_REGISTRY  # noqa: E402
from ropeext.suites import SUITES  # noqa: E402
from ropeext.jobs import export_workflow_pid  # noqa: E402
from ropeext.workflow import export_job_paths, export_tracking_env, export_warnings_env, write_resolved_config  # noqa: E402

export_job_paths(REPO_ROOT)
export_workflow_pid()  # a job stops when this Snakemake process is gone (killed outright included)

# the recipe overlay needs the raw config, so it runs before any default is filled in
resolve_config(config, source="config")
validate(config, schema="../schemas/config.schema.yaml")
raise_problems(config)  # every check that needs only the config and the file system, all problems at once

R = config["results_dir"]
MODEL = config["model"]["name"]
L = config["model"]["train_length"]
TARGETS = config["extension"]["target_lengths"]
METHODS = config["extension"]["methods"]
LAYOUTS = config["extension"]["layouts"]
SPLITS = ["train", "validation", "test"]
SHARDS = config["corpus"]["shards"]  # > 1: the corpus is split into shards, tokenized in parallel, then gathered
TOKENIZER = f"{R}/tokenizer/tokenizer.json"
ENV = "../../envs/ropeext.yaml"
ROPE_SCALING = scaling_methods(config)  # the methods whose scaling/<method>-<target>.json the RoPE job writes

# An imported base model brings its own tokenizer: tokenizer.path null then means that one.
TOKENIZER_FROM_BASE = bool(config["model"]["path"]) and not config["tokenizer"]["path"]
if TOKENIZER_FROM_BASE:
    config["tokenizer"]["path"] = f"{R}/models/{MODEL}-base"

export_tracking_env(config)
export_warnings_env(R)  # jobs record their warnings in {R}/warnings (ropeext.job_warnings)
CONFIG = write_resolved_config(config, R)
REFERENCES = config["report"]["references"] or f"{REPO_ROOT}/config/reference_values.yaml"


# Wildcard patterns of the layouts the schema knows, and of evaluated models (noft: no fine-tuning).
TRAIN_LAYOUT = "|".join(load_schema()["$defs"]["layout"]["enum"])
EVAL_LAYOUT = f"noft|{TRAIN_LAYOUT}"


def section(*keys):
    """A digest of the config keys a rule's command reads ("eval.ruler", "seed"), passed as a param so
    that a change in them, and only in them, re-runs the rule. (A digest, not the JSON itself: Snakemake
    would read a `{word}` inside a config string as a wildcard.)"""

    def get(key):
        value = config
        for part in key.split("."):
            value = value[part]
        return value

    blob = json.dumps({k: get(k) for k in keys}, sort_keys=True)
    return f"{'+'.join(keys)}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def log_file(rule_name, name):
    return f"{R}/logs/{rule_name}/{name}.log"


def bench_file(rule_name, name):
    return f"{R}/benchmarks/{rule_name}/{name}.tsv"


# Scheduling order where several jobs are ready: the data jobs first (pre-training waits for them and
# nothing else is long), then the noft models (seconds of work, which the evaluations wait for), then
# fine-tuning (the longest jobs; evaluations then fill the cores around them rather than trail the last
# one), then the evaluations, the longest first (their suites' priority, 0-9), then the rest.
DATA_PRIORITY = 20
EXTEND_PRIORITY = 15
FINETUNE_PRIORITY = 10


def threads_of(group):
    return config["resources"][group]["threads"]


def resources_of(group):
    """A rule group's scheduler resources from the config (resources.<group>)."""
    r = config["resources"][group]
    return {"gpu": r["gpu"], "mem_mb": r["mem_mb"], "runtime": r["runtime"]}


def variant(method, target, layout):
    return f"{MODEL}-{method}-{target}-{layout}"


def base_model():
    """The base model directory: pre-trained here (model.path null) or imported from model.path."""
    return f"{R}/models/{MODEL}-base"


def cli(rule_name):
    """The command a job runs `ropeext` with: `python -m ropeext.cli`, with its rule and wildcards in the
    environment (its MLflow run records them as tags) and OMP_NUM_THREADS set to its threads. Shell text:
    every value in it is quoted (the accelerate config's path may hold spaces or quotes).

    A fine-tune with finetune.accelerate_config runs under `python -m ropeext.launch`, one process per GPU
    of the job (on a machine without GPUs, one CPU process per thread of the job, over gloo). A job that
    asks for GPUs runs under ropeext.gpu_slots, which gives it devices of its own on a shared node (and
    keeps the ones a scheduler such as SLURM assigned).
    """

    def command(wildcards, threads, resources):
        pairs = ",".join(f"{k}={v}" for k, v in wildcards.items())
        gpus = int(resources.get("gpu", 0))
        acc = config["finetune"]["accelerate_config"]
        run = "python -m ropeext.cli"
        if rule_name == "finetune" and acc:
            run = f"python -m ropeext.launch --config_file {shlex.quote(acc)} --num_processes {gpus or threads} -- "
        if gpus:
            run = f"python -m ropeext.gpu_slots --gpus {gpus} -- {run}"
        env = f"ROPEEXT_RULE={shlex.quote(rule_name)} ROPEEXT_WILDCARDS={shlex.quote(pairs)}"
        return f"{env} OMP_NUM_THREADS={threads} {run}"

    return command


def quoted(values, **shell):
    """A namespace of ``values``' named entries (a namespace or Snakemake's input/output) quoted for the shell, with
    ``shell`` (text that is shell words already) added as is: what a suite's command template is filled in with."""

    def words(value):
        return " ".join(map(shlex.quote, map(str, value))) if isinstance(value, list) else shlex.quote(str(value))

    items = values.items() if hasattr(values, "items") else vars(values).items()
    return SimpleNamespace(**{k: words(v) for k, v in items}, **shell)


def selected_variants(selection):
    """Variant names for a `variants` selection (see the schema's variant_selection)."""
    return [variant(*model) for model in selected_models(config, selection)]


def noft_methods():
    """The methods some enabled evaluation suite reads without fine-tuning (none: the `base` selection), in a
    fixed order: one extend job per target length writes them all."""
    configs = [suite.config(config) for suite in SUITES]
    models = [m for c in configs if c.get("enabled", True) for m in selected_models(config, c["variants"])]
    return list(dict.fromkeys(method for method, _, layout in models if layout == "noft"))


def suite_variants(suite):
    """The variants an evaluation suite (ropeext.suites) selects, or [] when it is disabled."""
    cfg = suite.config(config)
    return selected_variants(cfg["variants"]) if cfg.get("enabled", True) else []


def suite_outputs(suite):
    """The metrics files of an evaluation suite for its selected variants."""
    return [f"{R}/{suite.folder}/{v}/{suite.metrics}" for v in suite_variants(suite)]


def suite_rule_outputs(suite):
    """The outputs of a suite's rule: its metrics file and its further per-variant files (Suite.variant_files; the
    HTML report shows the report's cross-variant figures instead, see report.smk)."""
    folder = f"{R}/{suite.folder}/{MODEL}-{{method}}-{{target}}-{{layout}}"
    files = {f"file{i}": f"{folder}/{name}" for i, name in enumerate(suite.variant_files)}
    return {"metrics": f"{folder}/{suite.metrics}", **files}


def suite_jobs_outputs(suite):
    """eval.jobs per_suite: the outputs of a suite's one job, every selected variant's metrics file and further files."""
    out = []
    for name in suite_variants(suite):
        folder = f"{R}/{suite.folder}/{name}"
        out.append(f"{folder}/{suite.metrics}")
        out += [f"{folder}/{file}" for file in suite.variant_files]
    return out


def report_items(finetuned):
    """The report rule's files in Snakemake's HTML report (`ropeext report` writes them all, with an .html page
    beside each table and summary.md, ropeext.report.html): the summary and the published comparisons; per
    evaluation suite that evaluates some variant, its category (its table's page and its cross-variant figures,
    Suite.figures); the RoPE disturbance table per L'; the fine-tuning table when some variant is ``finetuned``.
    Each CSV stays a plain output beside its page."""
    out = f"{R}/report"

    def item(name, caption, category, **kw):
        return report(f"{out}/{name}", caption=f"../report/{caption}", category=category, **kw)

    items = {
        "summary_html": item("summary.html", "summary.rst", "Summary"),
        "published_html": item("published.html", "published.rst", "Summary"),
        "headline_csv": f"{out}/headline.csv",
        "headline_html": item("headline.html", "headline.rst", "Summary"),
    }
    for suite in SUITES:
        if suite_outputs(suite):
            items[f"{suite.name}_csv"] = f"{out}/{suite.name}.csv"
            items |= {f"{suite.name}_{k}": item(f.file, f.caption, f.category) for k, f in suite.figures.items()}
    for t in TARGETS:
        items[f"disturbance_{t}_csv"] = f"{out}/disturbance-compare-{t}.csv"
        items[f"disturbance_{t}_html"] = item(f"disturbance-compare-{t}.html", "disturbance_table.rst", "RoPE",
                                              subcategory=f"L' = {t}")
    if finetuned:
        items["finetuning_csv"] = f"{out}/finetuning.csv"
        items["finetuning_html"] = item("finetuning.html", "finetuning.rst", "Fine-tuning")
    return items


def suite_jobs_command(suite):
    """eval.jobs per_suite: `ropeext each` with the suite's command for every selected variant. Quoted twice:
    each path inside a command (`ropeext each` splits the command as a shell would), then each command."""

    def command(wildcards, input, output, threads):
        commands = []
        for name in suite_variants(suite):
            one = SimpleNamespace(model=f"{R}/models/{name}", **suite.inputs(config))
            params = SimpleNamespace(cfg=CONFIG, outdir=f"{R}/{suite.folder}/{name}", variant=name)
            commands.append(suite.command.format(input=quoted(one), threads=threads,
                                                 params=quoted(params, args=suite.args(config, one))))
        return " ".join(shlex.quote(c) for c in commands)

    return command


def suite_command(suite):
    """A suite's command (Suite.command) filled in for one job. (Filled in here, not in the rule's shell: a
    rule made in a loop runs its shell expression when the job runs, when the loop variable has moved on.) Every
    path in it is quoted for the shell; the suite's args come quoted already."""

    def command(wildcards, input, output, threads):
        params = SimpleNamespace(cfg=CONFIG, outdir=os.path.dirname(output.metrics),
                                 variant=variant(wildcards.method, wildcards.target, wildcards.layout))
        return suite.command.format(input=quoted(input), output=quoted(output), threads=threads, wildcards=wildcards,
                                    params=quoted(params, args=suite.args(config, input)))

    return command


def model_dir(wildcards):
    return f"{R}/models/{variant(wildcards.method, wildcards.target, wildcards.layout)}"


wildcard_constraints:
    method="|".join(METHOD_REGISTRY),
    layout=TRAIN_LAYOUT,
    target=r"\d+",
    window=r"\d+",
    split="train|validation|test",
    shard=r"\d{5}",



def _shard_files(folder, split):
    if SHARDS == 1:
        return [f"{R}/{folder}/{split}.parquet"]
    return [f"{R}/{folder}/{split}-{i:05d}-of-{SHARDS:05d}.parquet" for i in range(SHARDS)]


def corpus_files(split):
    """The corpus stage's files of a split: one Parquet file, or its shards (corpus.shards > 1)."""
    return _shard_files("corpus", split)


def token_shard_files(split):
    """The tokenized shards of a split, gathered into tokens/<split>.parquet (corpus.shards > 1)."""
    return _shard_files("tokens", split)
