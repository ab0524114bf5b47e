# Config validation, path helpers and the variant grid shared by every rule file.
import json

from snakemake.utils import min_version, validate

min_version("9.0")


validate(config, schema="../schemas/config.schema.yaml")

from ropeext.config import validate_config  # noqa: E402  (cross-key checks, same schema)
from ropeext.workflow import export_tracking_env, write_resolved_config  # noqa: E402

validate_config(config, source="config")

R = config["results_dir"]
MODEL = config["model"]["name"]
L = config["model"]["train_length"]
TARGETS = config["extension"]["target_lengths"]
METHODS = config["extension"]["methods"]
LAYOUTS = config["extension"]["layouts"]
SPLITS = ["train", "validation", "test"]
ENV = "../../envs/ropeext.yaml"
ARCH = config["model"]["architecture"]
HEAD_DIM = ARCH["hidden_size"] // ARCH["num_attention_heads"]
ROPE_THETA = ARCH["rope_theta"]

export_tracking_env(config)
CONFIG = write_resolved_config(config, R)


def section(*keys):
    """JSON of config sections, passed as a param so that a change in them re-runs the rule."""
    return json.dumps({k: config[k] for k in keys}, sort_keys=True)


def variant(method, target, layout):
    return f"{MODEL}-{method}-{target}-{layout}"


def base_model():
    return config["model"]["path"] or f"{R}/models/{MODEL}-base"


def base_model_input(wildcards):
    return [] if config["model"]["path"] else [f"{R}/models/{MODEL}-base"]


def all_variants():
    """Every evaluated model: each method before fine-tuning (noft) and after, per layout."""
    out = []
    for target in TARGETS:
        for method in METHODS:
            out.append(variant(method, target, "noft"))
            out.extend(variant(method, target, layout) for layout in LAYOUTS)
    return out


def geometry_args(wildcards):
    return (f"--rope-theta {ROPE_THETA} --head-dim {HEAD_DIM} --train-length {L} "
            f"--target-length {wildcards.target} --bins {config['rope']['bins']} "
            f"--kl-direction {config['rope']['kl_direction']}")


def solve_args(wildcards):
    rope = config["rope"]
    args = []
    dims = rope["interpolated_dims"]
    if isinstance(dims, dict):
        dims = dims.get(str(wildcards.target), dims.get(int(wildcards.target)))
    if wildcards.method == "dprope":
        args.append(f"--interpolated-dims {dims}" if dims is not None else f"--threshold {rope['threshold']}")
    if wildcards.method == "longrope":
        args.append(f"--factors-file {rope['factors_file']}")
    if wildcards.method == "base_change" and rope["base_change_theta"]:
        args.append(f"--new-rope-theta {rope['base_change_theta']}")
    return " ".join(args)




def ppl_inputs(wildcards):
    inputs = {"tokens": f"{R}/tokens/test.parquet"}
    if wildcards.layout == "noft":
        inputs["scaling"] = f"{R}/rope/scaling/{wildcards.method}-{wildcards.target}.json"
        if not config["model"]["path"]:
            inputs["model"] = f"{R}/models/{MODEL}-base"
    else:
        inputs["model"] = f"{R}/models/{MODEL}-{wildcards.method}-{wildcards.target}-{wildcards.layout}"
    return inputs


def ppl_model_args(wildcards):
    if wildcards.layout == "noft":
        return (f"--model {base_model()} "
                f"--scaling {R}/rope/scaling/{wildcards.method}-{wildcards.target}.json")
    return f"--model {R}/models/{MODEL}-{wildcards.method}-{wildcards.target}-{wildcards.layout}"


wildcard_constraints:
    method="|".join(sorted(set(METHODS) | set(config["rope"]["compare_methods"]))),
    layout="full|intra_doc_reset|intra_doc|anchor_tag|anchor",
    target=r"\d+",
    window=r"\d+",
    split="train|validation|test",

