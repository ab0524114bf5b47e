"""Plots of RoPE methods at one geometry: per-pair disturbance, a few pairs' angle histograms, and
heat maps of every pair's histogram (pairs x angle bins)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ropeext.io import pyplot, save_figure


def plot_per_pair(path: str | Path, solutions: dict, title: str) -> Path:
    """Disturbance D_i of every rotary pair (log scale), one line per method."""
    plt = pyplot()
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


def plot_pair_histograms(
    path: str | Path,
    geometry,
    pairs: list[int],
    pretrain: np.ndarray,
    per_method: dict[str, np.ndarray],
    solutions: dict,
    title: str,
) -> Path:
    """One panel per pair: the pre-training histogram and each method's at the target length."""
    plt = pyplot()
    bins = pretrain.shape[1]
    fig, axes = plt.subplots(len(pairs), 1, figsize=(9, 2.3 * len(pairs)), squeeze=False)
    centers = (np.arange(bins) + 0.5) * 360.0 / bins
    for row, pair in enumerate(pairs):
        ax = axes[row, 0]
        ax.step(
            centers,
            pretrain[row],
            where="mid",
            color="black",
            lw=1.6,
            label=f"pre-training (m < {geometry.train_length})",
        )
        for name, hist in per_method.items():
            ax.step(
                centers,
                hist[row],
                where="mid",
                lw=0.9,
                alpha=0.8,
                label=f"{name} (D_i={solutions[name]['per_pair_disturbance'][pair]:.3g})",
            )
        ax.set_title(f"pair {pair}: period {2 * np.pi / geometry.theta64()[pair]:.4g} positions", fontsize=9)
        ax.set_ylabel("P(k)")
        ax.legend(fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("rotary angle (degrees)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_heatmaps(path: str | Path, arrays: dict, title: str) -> Path:
    """Pairs x angle bins for the pre-training histogram and each method's (``histogram_arrays``)."""
    # heavy: matplotlib loads only when a figure is drawn
    from matplotlib.colors import LogNorm

    plt = pyplot()
    names = ["pretrain"] + [str(m) for m in arrays["methods"]]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 4.2), squeeze=False, sharey=True)
    low = min(float(np.min(arrays[n])) for n in names)
    high = max(float(np.max(arrays[n])) for n in names)
    image = None
    for ax, name in zip(axes[0], names):
        hist = arrays[name]
        image = ax.imshow(
            hist,
            aspect="auto",
            origin="lower",
            norm=LogNorm(vmin=low, vmax=high),
            extent=(0, 360, -0.5, hist.shape[0] - 0.5),
            cmap="viridis",
            interpolation="nearest",
        )
        label = "pre-training (m < L)" if name == "pretrain" else f"{name} (m < L')"
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("angle (degrees)")
    axes[0, 0].set_ylabel("rotary pair i")
    fig.colorbar(image, ax=axes[0].tolist(), label="P_i(k)", shrink=0.85)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=110)
