"""Figures of what a vision site does with an image: the image, one channel's feature
map laid over it, every channel's largest activation (the brightest marked), and a
grid of the strongest channels' feature maps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from neurodbg.viz.figures import plt, save_figure

if TYPE_CHECKING:
    from neurodbg.vision.image_trace import ImageTrace


def image_trace_figure(trace: ImageTrace, path: Path, *, channel: int, grid: int = 16) -> Path:
    spatial = trace.maps.dim() == 3
    shown = trace.ranked()[:grid] if spatial else []
    cols = 4
    rows = 1 + math.ceil(len(shown) / cols)
    fig = plt.figure(figsize=(12, 3.4 * rows), dpi=100, layout="constrained")
    cells = fig.add_gridspec(rows, 12)        # the first row in thirds, the map grid in quarters
    picture = np.asarray(trace.image.convert("RGB"))
    ax = fig.add_subplot(cells[0, 0:4])
    ax.imshow(picture)
    ax.set_title("input", fontsize=9)
    ax.axis("off")
    ax = fig.add_subplot(cells[0, 4:8])
    if spatial:
        ax.imshow(picture)
        ax.imshow(trace.maps[channel].numpy(), cmap="inferno", alpha=0.55, interpolation="bilinear",
                  extent=(-0.5, picture.shape[1] - 0.5, picture.shape[0] - 0.5, -0.5))
        ax.set_title(f"channel {channel} over the input (max {float(trace.maxima[channel]):.3g})", fontsize=9)
        ax.axis("off")
    elif trace.logits is not None:
        classes = trace.classes(10)
        ax.barh([c["label"] for c in classes][::-1], [c["prob"] for c in classes][::-1], color="#4c72b0")
        ax.set_title("class probabilities", fontsize=9)
        ax.tick_params(labelsize=7)
    else:
        ax.axis("off")
    ax = fig.add_subplot(cells[0, 8:12])
    maxima = trace.maxima.numpy()
    colours = ["#c44e52" if c == trace.brightest else "#8c8c8c" for c in range(len(maxima))]
    ax.bar(np.arange(len(maxima)), maxima, color=colours, width=1.0)
    ax.set_title(f"{trace.site}: max per channel (brightest: {trace.brightest})", fontsize=9)
    ax.set_xlabel("channel", fontsize=8)
    ax.tick_params(labelsize=7)
    for i, c in enumerate(shown):
        ax = fig.add_subplot(cells[1 + i // cols, 3 * (i % cols):3 * (i % cols) + 3])
        ax.imshow(trace.maps[c].numpy(), cmap="viridis", interpolation="nearest")
        ax.set_title(f"ch {c}  max {float(trace.maxima[c]):.3g}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{trace.model} · {trace.site} · output {trace.shape}", fontsize=10)
    return save_figure(fig, path)


def image_neuron_figure(page: dict[str, Any], pictures: dict[int, Image.Image], path: Path, *,
                        per_row: int = 8) -> Path:
    """An image atlas's neuron: its top (and bottom) images, each with its feature map laid over
    it and the receptive field of its peak boxed."""
    from matplotlib.patches import Rectangle

    # the bottom images only where the neuron goes negative (after a ReLU they are all ties at 0)
    kinds = [k for k in ("+", "-") if page["exemplars"].get(k) and (k == "+" or (page["min_value"] or 0) < 0)]
    rows = [(k, page["exemplars"][k][i:i + per_row]) for k in kinds
            for i in range(0, len(page["exemplars"][k]), per_row)]
    fig, axes = plt.subplots(max(len(rows), 1), per_row, figsize=(1.6 * per_row, 1.9 * max(len(rows), 1)),
                             dpi=100, squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for r, (kind, entries) in enumerate(rows):
        for c, entry in enumerate(entries):
            ax = axes[r][c]
            picture = pictures.get(entry["image"])
            if picture is None:
                continue
            pixels = np.asarray(picture.convert("RGB"))
            height, width = pixels.shape[:2]
            ax.imshow(pixels, interpolation="nearest")
            if entry["map"] is not None:
                ax.imshow(np.asarray(entry["map"]) * (1 if kind == "+" else -1), cmap="inferno", alpha=0.45,
                          interpolation="nearest", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
            top, left, bottom, right = entry["field"]
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                                   edgecolor="#00e5ff", linewidth=1.2))
            label = entry["label"] if entry["label"] is not None else entry["predicted"]
            ax.set_title(f"{kind}{entry['rank']} {label if label is not None else ''} {entry['value']:.3g}",
                         fontsize=7)
    fig.suptitle(f"{page['id']} ({page['site']}): top images (+) and bottom images (-); box: receptive field "
                 f"of the peak", fontsize=9)
    return save_figure(fig, path)
