"""ropeext angles: per-pair rotary angle histograms (.npz) and a heat map (pairs x bins)."""

from __future__ import annotations

from pathlib import Path

from ropeext.commands._common import config_from_args
from ropeext.commands._rope import add_rope_args, compare_methods, method_list, rope_settings, run_params, show_warnings
from ropeext.io import atomic_path

COMMAND = ("angles",)
HELP = "rotary angle histograms per pair: pre-training and each method at the target length (.npz + heat map)"


def add_arguments(parser) -> None:
    parser.add_argument("--methods", help="comma list of methods whose histograms at L' are written "
                        "(default: rope.angles_methods)")
    parser.add_argument("--output", required=True, metavar="NPZ", help="histograms file (.npz) to write")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="heat map to write (default: the --output path with .png)")
    add_rope_args(parser)


def run(args) -> int:
    import numpy as np

    from ropeext import tracking
    from ropeext.errors import RopeextError
    from ropeext.report.rope import plot_heatmaps
    from ropeext.rope.geometry import make_geometry
    from ropeext.rope.histograms import histogram_arrays

    show_warnings()
    out = Path(args.output)
    if out.suffix != ".npz":
        raise RopeextError(f"--output must end in .npz, got {out}")
    config = config_from_args(args)
    s = rope_settings(args, config)
    methods = method_list(args.methods, s["angles_methods"])
    _, solutions = compare_methods(s, methods)
    geometry = make_geometry(s["rope_theta"], s["head_dim"], s["train_length"], s["target_length"], warn=False)
    arrays = histogram_arrays(geometry, solutions, s["bins"], s["angle_dtype"])
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    title = (f"B={s['rope_theta']:g}, d={s['head_dim']}, L={s['train_length']} -> L'={s['target_length']}, "
             f"{s['bins']} bins")
    with tracking.stage_run("angles", config=config, params=run_params(s, methods=methods), variant=args.variant,
                            enabled=not args.no_mlflow) as run_:
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        plot_heatmaps(plot, arrays, title)
        run_.log_outputs(plot)
        run_.log_artifact(out)
    print(f"histograms of {', '.join(['pretrain'] + [str(m) for m in arrays['methods']])} -> {out}, heat map -> {plot}")
    return 0
