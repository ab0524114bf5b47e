"""What the RoPE commands (rope, solve, angles, compare) share: the setting of one geometry and the files
each writes. ``ropeext rope`` reads the setting from the config; the by-hand commands take the geometry
and method options on the command line, laid over the config's ``rope`` section."""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np

from ropeext import job_warnings, tracking
from ropeext.commands._common import add_config_args, add_tracking_args, parse_list
from ropeext.config import load_schema
from ropeext.io import atomic_path, write_csv, write_json
from ropeext.report.rope import plot_heatmaps, plot_pair_histograms, plot_per_pair
from ropeext.rope.geometry import make_geometry
from ropeext.rope.histograms import histogram_arrays, pair_histograms, revealing_pairs
from ropeext.rope.registry import METHODS
from ropeext.rope.solve import TABLE_COLUMNS, compare_solutions, key_parent

GEOMETRY = ("rope_theta", "head_dim", "train_length", "target_length")
PER_PAIR_PNG, HISTOGRAMS_PNG, DETAILS_JSON = "per_pair_disturbance.png", "angle_histograms.png", "compare.json"
TYPES = {"integer": int, "number": float, "string": str, "array": str}  # an array is given as a comma list


def option_flags() -> dict[str, tuple[str, str, dict]]:
    """``--flag`` -> (rope key, schema type, argparse keywords) of every method option of the registry."""
    schema = load_schema()["properties"]["rope"]
    users: dict[str, list[str]] = {}
    for name, method in METHODS.items():
        for key in method.options:
            users.setdefault(key, []).append(name)
    out = {}
    for key, names in users.items():
        node = schema
        for part in key.split("."):
            node = node["properties"][part]
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        kind = next(t for t in types if t != "null")
        words = {"action": argparse.BooleanOptionalAction} if kind == "boolean" else {"type": TYPES[kind]}
        text = node.get("description", "").strip() or key
        words["help"] = f"{', '.join(names)}: {text} (default: rope.{key})"
        out["--" + key.replace(".", "-").replace("_", "-")] = (key, kind, words)
    return out


def add_rope_args(parser) -> None:
    """Geometry, histogram and method options; the config's ``rope`` section supplies what is left out."""
    g = parser.add_argument_group("geometry")
    g.add_argument("--rope-theta", required=True, type=float, metavar="B", help="RoPE base of the model")
    g.add_argument("--head-dim", required=True, type=int, metavar="d", help="attention head dimension (even)")
    g.add_argument("--train-length", required=True, type=int, metavar="L", help="pre-training length")
    g.add_argument("--target-length", required=True, type=int, metavar="L2", help="target length L' > L")
    h = parser.add_argument_group("angle histograms")
    h.add_argument("--bins", type=int, help="histogram bins over [0, 2*pi) (default: rope.bins)")
    h.add_argument(
        "--kl-direction",
        choices=("code", "paper"),
        help="code: KL(pre-training || extended) as the authors' code; paper: reversed (default: rope.kl_direction)",
    )
    h.add_argument(
        "--angle-dtype",
        choices=("float32", "float64"),
        help="precision of the angle arithmetic; float32 as the authors' code (default: rope.angle_dtype)",
    )
    m = parser.add_argument_group("method options")
    for flag, (_, _, words) in option_flags().items():
        m.add_argument(flag, **words)
    add_config_args(parser, required=False)
    add_tracking_args(parser)


def add_methods_arg(parser, default_key: str) -> None:
    parser.add_argument(
        "--methods", help=f"comma list of methods, some of {', '.join(METHODS)} (default: rope.{default_key})"
    )


def rope_settings(args, config: dict) -> dict:
    """The ``rope`` section with the command line laid over it, plus the geometry.

    A selection on the command line (``--threshold`` or ``--interpolated-dims``) replaces the config's.
    """
    s = copy.deepcopy(config["rope"])
    for name in ("bins", "kl_direction", "angle_dtype"):
        s[name] = s[name] if getattr(args, name) is None else getattr(args, name)
    if args.threshold is not None or args.interpolated_dims is not None:
        s["threshold"] = s["interpolated_dims"] = None
    for flag, (key, kind, _) in option_flags().items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            node, last = key_parent(s, key)
            node[last] = parse_list(value, flag, str) if kind == "array" else value
    s.update({k: getattr(args, k) for k in GEOMETRY})
    return s


def config_settings(config: dict, target_length: int) -> dict:
    """The ``rope`` section and the geometry of the config's model at ``target_length``."""
    arch = config["model"]["architecture"]
    return {
        **config["rope"],
        "rope_theta": arch["rope_theta"],
        "head_dim": arch["hidden_size"] // arch["num_attention_heads"],
        "train_length": config["model"]["train_length"],
        "target_length": target_length,
    }


def solve_methods(s: dict, methods: list[str]) -> tuple[list[dict], dict[str, dict]]:
    """(table rows, solutions) of ``methods`` at the setting ``s``: what every RoPE command computes."""
    return compare_solutions(methods, *(s[k] for k in GEOMETRY), s["bins"], s["kl_direction"], s["angle_dtype"], rope=s)


def method_list(text: str | None, default: list[str]) -> list[str]:
    return default if text is None else parse_list(text, "--methods", str)


def run_params(s: dict, **extra) -> dict:
    return {**{k: v for k, v in s.items() if k not in ("compare_methods", "angles_methods")}, **extra}


def title(s: dict, kl: bool = True) -> str:
    return (
        f"B={s['rope_theta']:g}, d={s['head_dim']}, L={s['train_length']} -> L'={s['target_length']}, "
        f"{s['bins']} bins" + (f", KL {s['kl_direction']}" if kl else "")
    )


def _geometry(s: dict):
    return make_geometry(*(s[k] for k in GEOMETRY), warn=False)


def write_scaling(path, solution: dict, run) -> Path:
    path = write_json(path, solution)
    run.log_outputs(path)
    return path


def write_angles(npz, png, s: dict, solutions: dict, run) -> None:
    """Every pair's angle histograms (.npz) and their heat map."""
    arrays = histogram_arrays(_geometry(s), solutions, s["bins"], s["angle_dtype"])
    with atomic_path(Path(npz)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    plot_heatmaps(png, arrays, title(s, kl=False))
    run.log_outputs(png)
    run.log_artifact(npz)
    print(f"histograms of {', '.join(['pretrain'] + list(solutions))} -> {npz}, heat map -> {png}")


def write_compare(table, s: dict, rows: list[dict], solutions: dict, run) -> None:
    """The comparison table, every solution beside it, and the per-pair disturbance and histogram plots."""
    table, geometry = Path(table), _geometry(s)
    folder = table.parent
    write_csv(table, rows, TABLE_COLUMNS)
    write_json(folder / DETAILS_JSON, {"rows": rows, "solutions": solutions})
    plot_per_pair(folder / PER_PAIR_PNG, solutions, title(s))
    pairs = revealing_pairs(geometry)
    pretrain, per_method = pair_histograms(geometry, solutions, s["bins"], s["angle_dtype"], pairs)
    plot_pair_histograms(folder / HISTOGRAMS_PNG, geometry, pairs, pretrain, per_method, solutions, title(s))
    for row in rows:
        run.log_metrics(
            {
                f"disturbance.{row['method']}": row["disturbance"],
                f"reduction_vs_pi.{row['method']}": row["reduction_vs_pi"],
            }
        )
    for name in (table, folder / DETAILS_JSON, folder / PER_PAIR_PNG, folder / HISTOGRAMS_PNG):
        run.log_outputs(name)
    width = max(len(r["method"]) for r in rows)
    print(f"{'method':<{width}}  disturbance  interp_dims  reduction_vs_pi")
    for r in rows:
        print(
            f"{r['method']:<{width}}  {r['disturbance']:11.6f}  {r['interpolated_dims']:11d}  "
            f"{r['reduction_vs_pi']:+15.3f}"
        )


def stage_run(stage: str, args, config: dict, s: dict, **params):
    """The command's MLflow run."""
    return tracking.stage_run(
        stage, config=config, params=run_params(s, **params), variant=args.variant, enabled=not args.no_mlflow
    )


def show_warnings() -> None:
    """Print library warnings as one ``warning:`` line each (no file and line of the library); ropeext's own
    are also recorded for the job's run and the report (ropeext.job_warnings)."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    job_warnings.install(show)
