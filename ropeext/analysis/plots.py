"""The three figures of the BF16 analysis, one line per setting (bf16, fp32, random-bf16, ...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ropeext.io import pyplot, save_figure

COLORS = {"bf16": "tab:red", "fp32": "tab:blue", "random-bf16": "tab:orange", "fp64-exact": "tab:green"}


def _positive(x, y):
    """Points a log axis can show (zeros, e.g. D(16, 16), are left out)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(y) & (y > 0)
    return x[keep], y[keep]


def _finish(fig, ax, path, *, xlabel: str, ylabel: str, title: str) -> Path:
    """Log-scaled y axis, labels, grid and legend; then save and close the figure."""
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, bbox_inches="tight")


def _title(result: dict, what: str) -> str:
    name = result.get("variant") or Path(result["model"]).name
    return f"{what}\n{name} · path {result['numeric_path']} · {result['num_sequences']} sequences"


def plot_shift(result: dict, path: str | Path) -> Path:
    """D(delta1, delta2) against delta1: column variant solid, row variant dashed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, out in result["settings"].items():
        shift = out["shift"]
        color = COLORS.get(name)
        ax.plot(*_positive(shift["delta1"], shift["column"]["mean"]), "o-", color=color, label=f"{name} (columns)")
        ax.plot(
            *_positive(shift["delta1"], shift["row"]["mean"]), "s--", color=color, alpha=0.6, label=f"{name} (rows)"
        )
    delta2 = next(iter(result["settings"].values()))["shift"]["delta2"]
    ax.set_xscale("symlog", linthresh=25)
    return _finish(
        fig,
        ax,
        path,
        xlabel=r"$\delta_1$ (position shift)",
        ylabel=rf"D($\delta_1$, {delta2})",
        title=_title(result, f"Attention deviation under a position shift (T={result['spec']['length']})"),
    )


def plot_key_columns(result: dict, path: str | Path) -> Path:
    """Per-key-column contribution to D(delta_decompose, delta2); key 0 is marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    d1 = d2 = None
    for name, out in result["settings"].items():
        cols = out["key_columns"]
        d1, d2 = cols["delta1"], cols["delta2"]
        values = np.asarray(cols["contribution"], dtype=float)
        x, y = _positive(np.arange(values.size) + 1, values)
        share = cols["first_share"]
        label = f"{name} (key 0: {share:.1%})" if share == share else name
        (line,) = ax.plot(x, y, "-", lw=1, color=COLORS.get(name), label=label)
        if values.size and values[0] > 0:
            ax.plot([1], [values[0]], "o", ms=7, color=line.get_color())
    ax.set_xscale("log")
    return _finish(
        fig,
        ax,
        path,
        xlabel="key position j + 1",
        ylabel=rf"$\sum_{{l,h}}$ mean$_{{i\geq j}}$ |P$_{{ij}}$({d1}) - P$_{{ij}}$({d2})|",
        title=_title(result, f"Contribution of each key column to D({d1}, {d2})"),
    )


def plot_logits(result: dict, path: str | Path) -> Path:
    """D_logit(T) for the first key (solid) and the key at T // 2 (dashed)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    d1 = d2 = None
    for name, out in result["settings"].items():
        logits = out.get("logits")
        if not logits:
            continue
        d1, d2 = logits["delta1"], logits["delta2"]
        color = COLORS.get(name)
        ax.plot(*_positive(logits["lengths"], logits["first"]), "o-", color=color, label=f"{name} (first key)")
        ax.plot(*_positive(logits["lengths"], logits["mid"]), "s--", color=color, alpha=0.6, label=f"{name} (key T/2)")
    ax.set_xscale("log", base=2)
    return _finish(
        fig,
        ax,
        path,
        xlabel="sequence length T",
        ylabel=rf"D$_{{logit}}$ ({d1} vs {d2})",
        title=_title(result, "Pre-softmax logit deviation by sequence length"),
    )


PLOTS = {"deviation_vs_delta.png": plot_shift, "key_columns.png": plot_key_columns, "logit_deviation.png": plot_logits}


def write_plots(result: dict, folder: str | Path) -> list[Path]:
    paths = [fn(result, Path(folder) / name) for name, fn in PLOTS.items()]
    pyplot().close("all")
    return paths
