"""Heatmaps and bar charts of activations, written as PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

MAX_TICKS = 64
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback")


def _cjk_fallback() -> None:
    """Model text in figures may be Chinese (医生): fall back, glyph by glyph, to an installed CJK
    font (setup installs one on Debian); without one such glyphs are drawn as boxes."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    found = [name for name in CJK_FONTS if name in installed]
    if found:
        matplotlib.rcParams["font.family"] = ["DejaVu Sans", found[0]]


_cjk_fallback()


def _ticks(labels: Sequence[str], count: int) -> tuple[list[int], list[str]]:
    if len(labels) <= MAX_TICKS:
        return list(range(count)), list(labels)
    step = int(np.ceil(len(labels) / MAX_TICKS))
    idx = list(range(0, count, step))
    return idx, [labels[i] for i in idx]


def heatmap(values: np.ndarray, *, row_labels: Sequence[str], col_labels: Sequence[str], title: str,
            path: str | Path, xlabel: str = "neuron", ylabel: str = "token", diverging: bool = True,
            label: str = "activation") -> Path:
    """rows x columns heatmap; a diverging colour map centred on zero by default."""
    values = np.asarray(values, dtype=np.float32)
    rows, cols = values.shape
    width = min(max(6.0, 0.22 * cols + 2.5), 24.0)
    height = min(max(3.0, 0.3 * rows + 1.8), 16.0)
    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    if diverging:
        # A few outlier neurons (attention sinks reach thousands) would wash out the rest:
        # clip the colour scale at the 99.5th percentile and say so in the title.
        peak = float(np.abs(values).max()) or 1.0
        bound = float(np.percentile(np.abs(values), 99.5)) or peak
        if bound < peak:
            title += f"  (colour clipped at ±{bound:.3g}; max |x| {peak:.3g})"
        im = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    else:
        im = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
    xt, xl = _ticks(col_labels, cols)
    yt, yl = _ticks(row_labels, rows)
    ax.set_xticks(xt, xl, rotation=90, fontsize=7)
    ax.set_yticks(yt, yl, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label=label)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def bar_chart(values: np.ndarray, *, title: str, path: str | Path, xlabel: str = "neuron") -> Path:
    """One bar per neuron; the most active one is marked and labelled."""
    values = np.asarray(values, dtype=np.float32).ravel()
    best = int(values.argmax())
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=110)
    colours = np.where(values >= 0, "#4472c4", "#c55a5a")
    ax.bar(np.arange(values.size), values, width=1.0, color=colours)
    ax.bar([best], [values[best]], width=max(1.0, values.size / 300), color="#ff9900")
    ax.annotate(f"N{best} = {values[best]:.3g}", xy=(best, values[best]), xytext=(0, 6),
                textcoords="offset points", ha="center", fontsize=9, color="#b36b00")
    ax.set_xlim(-0.5, values.size - 0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("activation")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def attention_grid(patterns: dict[int, np.ndarray], tokens: Sequence[str], *, path: str | Path,
                   title: str) -> Path:
    """One query x key attention heatmap per layer, in a grid."""
    layers = sorted(patterns)
    cols = min(6, len(layers))
    rows = int(np.ceil(len(layers) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), dpi=100, squeeze=False)
    labels = tokens if len(tokens) <= 24 else []
    for ax, layer in zip(axes.flat, layers, strict=False):
        ax.imshow(patterns[layer], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    fig.suptitle(title + " (rows: query, columns: key)", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write a figure as PNG (creating its folder) and free it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
