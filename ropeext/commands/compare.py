"""ropeext compare: disturbance of several RoPE methods at one geometry -> table.csv and plots."""

from __future__ import annotations

import csv
from pathlib import Path

from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args
from ropeext.io import write_json
from ropeext.commands.solve import (_show_warnings, add_geometry_args, atomic_path, compare_from_args,
                                    run_params)
from ropeext.report.plots import save_figure

COMMAND = ("compare",)
HELP = "compare RoPE methods at one geometry: table.csv, per-pair disturbance and angle histogram plots"

PER_PAIR_PNG = "per_pair_disturbance.png"
HISTOGRAMS_PNG = "angle_histograms.png"
DETAILS_JSON = "compare.json"


def add_arguments(parser) -> None:
    add_geometry_args(parser)
    parser.add_argument("--methods", default="none,pi,ntk,yarn,dprope",
                        help="comma list of methods (default none,pi,ntk,yarn,dprope)")
    parser.add_argument("--output", required=True, metavar="CSV",
                        help=f"table.csv to write; {PER_PAIR_PNG}, {HISTOGRAMS_PNG} and {DETAILS_JSON} go beside it")
    add_config_args(parser, required=False)
    add_tracking_args(parser)


def write_table(path: Path, rows: list[dict], columns) -> Path:
    tmp = atomic_path(path)
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in columns})
    tmp.replace(path)
    return path


def revealing_pairs(geometry, count: int = 4) -> list[int]:
    """Pair 0 (fastest), the pairs around the one whose period first exceeds L, and the slowest pair."""
    import numpy as np

    period = 2 * np.pi / geometry.theta64()
    critical = int(np.argmax(period > geometry.train_length)) if np.any(period > geometry.train_length) \
        else geometry.pairs - 1
    picks = [0, max(critical - 1, 0), critical, geometry.pairs - 1]
    out = []
    for p in picks:
        if p not in out:
            out.append(p)
    return out[:count]


def plot_per_pair(path: Path, solutions: dict, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, sol in solutions.items():
        d = np.maximum(np.asarray(sol["per_pair_disturbance"]), 1e-12)
        ax.plot(np.arange(d.size), d, marker=".", label=f"{name} (D={sol['disturbance']:.4g})")
    ax.set_yscale("log")
    ax.set_xlabel("rotary pair i")
    ax.set_ylabel("disturbance D_i (KL, nats)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_histograms(path: Path, geometry, solutions: dict, bins: int, angle_dtype: str, pairs: list[int],
                    title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ropeext.rope.angles import angle_histograms
    from ropeext.rope.methods import method_frequencies

    theta = method_frequencies("none", geometry).frequencies(geometry, angle_dtype)
    pre = angle_histograms(theta[pairs], geometry.train_length, bins, angle_dtype)
    fig, axes = plt.subplots(len(pairs), 1, figsize=(9, 2.3 * len(pairs)), squeeze=False)
    centers = (np.arange(bins) + 0.5) * 360.0 / bins
    for row, pair in enumerate(pairs):
        ax = axes[row, 0]
        ax.step(centers, pre[row], where="mid", color="black", lw=1.6, label=f"pre-training (m < {geometry.train_length})")
        for name, sol in solutions.items():
            freq = np.asarray(sol["inv_freq"], dtype=np.float32)
            if angle_dtype == "float64":
                freq = geometry.theta64() / np.asarray(sol["factors"])
            hist = angle_histograms(freq[[pair]], geometry.target_length, bins, angle_dtype)[0]
            ax.step(centers, hist, where="mid", lw=0.9, alpha=0.8,
                    label=f"{name} (D_i={sol['per_pair_disturbance'][pair]:.3g})")
        ax.set_title(f"pair {pair}: period {2 * np.pi / geometry.theta64()[pair]:.4g} positions", fontsize=9)
        ax.set_ylabel("P(k)")
        ax.legend(fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("rotary angle (degrees)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def run(args) -> int:
    from ropeext import tracking
    from ropeext.rope.geometry import make_geometry
    from ropeext.rope.solve import TABLE_COLUMNS

    _show_warnings()
    rows, solutions = compare_from_args(args)
    geometry = make_geometry(args.rope_theta, args.head_dim, args.train_length, args.target_length, warn=False)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = out.parent
    title = (f"B={args.rope_theta:g}, d={args.head_dim}, L={args.train_length} -> L'={args.target_length}, "
             f"{args.bins} bins, KL {args.kl_direction}")
    config = config_from_args(args)
    with tracking.stage_run("compare", config=config, params=run_params(args), variant=args.variant,
                            enabled=not args.no_mlflow) as run_:
        write_table(out, rows, TABLE_COLUMNS)
        write_json(folder / DETAILS_JSON, {"rows": rows, "solutions": solutions})
        plot_per_pair(folder / PER_PAIR_PNG, solutions, title)
        plot_histograms(folder / HISTOGRAMS_PNG, geometry, solutions, args.bins, args.angle_dtype,
                        revealing_pairs(geometry), title)
        for row in rows:
            run_.log_metrics({f"disturbance.{row['method']}": row["disturbance"],
                              f"reduction_vs_pi.{row['method']}": row["reduction_vs_pi"]})
        for name in (out, folder / DETAILS_JSON, folder / PER_PAIR_PNG, folder / HISTOGRAMS_PNG):
            run_.log_outputs(name)
    width = max(len(r["method"]) for r in rows)
    print(f"{'method':<{width}}  disturbance  interp_dims  reduction_vs_pi")
    for r in rows:
        print(f"{r['method']:<{width}}  {r['disturbance']:11.6f}  {r['interpolated_dims']:11d}  "
              f"{r['reduction_vs_pi']:+15.3f}")
    return 0
