"""ropeext angles: per-pair rotary angle histograms (.npz) and a heat map (pairs x bins)."""

from __future__ import annotations

from pathlib import Path

from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args
from ropeext.commands.solve import (_show_warnings, add_geometry_args, atomic_path, compare_from_args,
                                    run_params)
from ropeext.report.plots import save_figure

COMMAND = ("angles",)
HELP = "rotary angle histograms per pair: pre-training and each method at the target length (.npz + heat map)"


def add_arguments(parser) -> None:
    add_geometry_args(parser)
    parser.add_argument("--methods", default="none,pi,yarn,dprope",
                        help="comma list of methods whose histograms at L' are written (default none,pi,yarn,dprope)")
    parser.add_argument("--output", required=True, metavar="NPZ", help="histograms file (.npz) to write")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="heat map to write (default: the --output path with .png)")
    add_config_args(parser, required=False)
    add_tracking_args(parser)


def histograms(args) -> dict:
    """``pretrain`` and each method's histograms (pairs x bins) plus frequencies and per-pair disturbance."""
    import numpy as np

    from ropeext.rope.angles import angle_histograms

    _, solutions = compare_from_args(args)
    from ropeext.rope.geometry import make_geometry
    from ropeext.rope.methods import method_frequencies

    geometry = make_geometry(args.rope_theta, args.head_dim, args.train_length, args.target_length, warn=False)
    theta = method_frequencies("none", geometry).frequencies(geometry, args.angle_dtype)
    arrays = {"pretrain": angle_histograms(theta, geometry.train_length, args.bins, args.angle_dtype),
              "pretrain_inv_freq": np.asarray(theta)}
    for name, sol in solutions.items():
        freq = np.asarray(sol["inv_freq"], dtype=np.float32)
        if args.angle_dtype == "float64":
            freq = geometry.theta64() / np.asarray(sol["factors"])
        arrays[name] = angle_histograms(freq, geometry.target_length, args.bins, args.angle_dtype)
        arrays[f"{name}_inv_freq"] = freq
        arrays[f"{name}_factors"] = np.asarray(sol["factors"])
        arrays[f"{name}_disturbance"] = np.asarray(sol["per_pair_disturbance"])
    arrays["geometry"] = np.array([geometry.rope_theta, geometry.head_dim, geometry.train_length,
                                   geometry.target_length, args.bins], dtype=np.float64)
    arrays["methods"] = np.array(list(solutions))
    return arrays


def plot_heatmaps(path: Path, arrays: dict, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    names = ["pretrain"] + [str(m) for m in arrays["methods"]]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 4.2), squeeze=False, sharey=True)
    low = min(float(np.min(arrays[n])) for n in names)
    high = max(float(np.max(arrays[n])) for n in names)
    image = None
    for ax, name in zip(axes[0], names):
        hist = arrays[name]
        image = ax.imshow(hist, aspect="auto", origin="lower", norm=LogNorm(vmin=low, vmax=high),
                          extent=(0, 360, -0.5, hist.shape[0] - 0.5), cmap="viridis", interpolation="nearest")
        label = "pre-training (m < L)" if name == "pretrain" else f"{name} (m < L')"
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("angle (degrees)")
    axes[0, 0].set_ylabel("rotary pair i")
    fig.colorbar(image, ax=axes[0].tolist(), label="P_i(k)", shrink=0.85)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=110)


def run(args) -> int:
    import numpy as np

    from ropeext import tracking

    _show_warnings()
    arrays = histograms(args)
    out = Path(args.output)
    if out.suffix != ".npz":
        from ropeext.errors import RopeextError

        raise RopeextError(f"--output must end in .npz, got {out}")
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    title = (f"B={args.rope_theta:g}, d={args.head_dim}, L={args.train_length} -> L'={args.target_length}, "
             f"{args.bins} bins")
    config = config_from_args(args)
    with tracking.stage_run("angles", config=config, params=run_params(args), variant=args.variant,
                            enabled=not args.no_mlflow) as run_:
        tmp = atomic_path(out)
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        tmp.replace(out)
        plot_heatmaps(plot, arrays, title)
        run_.log_outputs(plot)
        run_.log_artifact(out)
    print(f"histograms of {', '.join(['pretrain'] + [str(m) for m in arrays['methods']])} -> {out}, heat map -> {plot}")
    return 0
