"""ropeext compare: disturbance of several RoPE methods at one geometry -> table.csv and plots."""

from __future__ import annotations

from pathlib import Path

from ropeext.commands._common import config_from_args
from ropeext.commands._rope import (add_rope_args, compare_methods, method_list, rope_settings, run_params,
                                    show_warnings)
from ropeext.io import write_csv, write_json

COMMAND = ("compare",)
HELP = "compare RoPE methods at one geometry: table.csv, per-pair disturbance and angle histogram plots"

PER_PAIR_PNG = "per_pair_disturbance.png"
HISTOGRAMS_PNG = "angle_histograms.png"
DETAILS_JSON = "compare.json"


def add_arguments(parser) -> None:
    parser.add_argument("--methods", help="comma list of methods (default: rope.compare_methods)")
    parser.add_argument("--output", required=True, metavar="CSV",
                        help=f"table.csv to write; {PER_PAIR_PNG}, {HISTOGRAMS_PNG} and {DETAILS_JSON} go beside it")
    add_rope_args(parser)


def run(args) -> int:
    from ropeext import tracking
    from ropeext.report.rope import plot_pair_histograms, plot_per_pair
    from ropeext.rope.geometry import make_geometry
    from ropeext.rope.histograms import pair_histograms, revealing_pairs
    from ropeext.rope.solve import TABLE_COLUMNS

    show_warnings()
    config = config_from_args(args)
    s = rope_settings(args, config)
    methods = method_list(args.methods, s["compare_methods"])
    rows, solutions = compare_methods(s, methods)
    geometry = make_geometry(s["rope_theta"], s["head_dim"], s["train_length"], s["target_length"], warn=False)
    out = Path(args.output)
    folder = out.parent
    title = (f"B={s['rope_theta']:g}, d={s['head_dim']}, L={s['train_length']} -> L'={s['target_length']}, "
             f"{s['bins']} bins, KL {s['kl_direction']}")
    pairs = revealing_pairs(geometry)
    with tracking.stage_run("compare", config=config, params=run_params(s, methods=methods), variant=args.variant,
                            enabled=not args.no_mlflow) as run_:
        write_csv(out, rows, TABLE_COLUMNS)
        write_json(folder / DETAILS_JSON, {"rows": rows, "solutions": solutions})
        plot_per_pair(folder / PER_PAIR_PNG, solutions, title)
        pretrain, per_method = pair_histograms(geometry, solutions, s["bins"], s["angle_dtype"], pairs)
        plot_pair_histograms(folder / HISTOGRAMS_PNG, geometry, pairs, pretrain, per_method, solutions, title)
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
