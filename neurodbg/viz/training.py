"""Figures of a training run (matplotlib, Agg): loss curves, a layers x steps heatmap
of gradient norms, and dead-unit (and saturation) shares per layer over the steps,
on one page."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

from neurodbg.train.records import RunRecords


def run_figure(records: RunRecords, path: str | Path, *, title: str = "") -> Path:
    """Three panels: training and validation loss; log10 gradient norm per parameter tensor and
    recorded step; the share of dead units of every rectifier site per recorded step."""
    fig, axes = plt.subplots(3, 1, figsize=(10, 11), dpi=100)
    loss_ax, grad_ax, dead_ax = axes
    for key, label, style in (("loss", "training loss", "-"), ("val_loss", "validation loss", "o-")):
        series = [(s, v) for s, v in records.series(key) if v is not None]
        if series:
            loss_ax.plot([s for s, _ in series], [v for _, v in series], style, label=label, markersize=3)
    acc = [(s, v) for s, v in records.series("val_acc") if v is not None]
    if acc:
        twin = loss_ax.twinx()
        twin.plot([s for s, _ in acc], [v for _, v in acc], "s--", color="tab:green", markersize=3,
                  label="validation accuracy")
        twin.set_ylabel("accuracy")
        twin.set_ylim(0, 1)
        twin.legend(loc="upper center", fontsize=8)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    values = [v for key in ("loss", "val_loss") for _, v in records.series(key) if v is not None and v > 0]
    if values and max(values) / min(values) > 20:        # a log scale only where the loss spans decades
        loss_ax.set_yscale("log")
    loss_ax.legend(loc="upper right", fontsize=8)
    loss_ax.set_title(title or "loss", fontsize=10)

    params = list(records.params.values())
    steps = sorted({s for p in params for s in p.steps})
    if params and steps:
        index = {s: i for i, s in enumerate(steps)}
        grid = np.full((len(params), len(steps)), np.nan)
        for row, p in enumerate(params):
            for s, g in zip(p.steps, p.grad_norm, strict=True):
                grid[row, index[s]] = math.log10(g) if g and g > 0 else np.nan
        image = grad_ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest",
                               extent=(steps[0] - 0.5, steps[-1] + 0.5, len(params) - 0.5, -0.5))
        grad_ax.set_yticks(range(len(params)), [p.name for p in params], fontsize=6 if len(params) > 20 else 8)
        fig.colorbar(image, ax=grad_ax, label="log10 gradient norm", fraction=0.03)
    grad_ax.set_xlabel("step")
    grad_ax.set_title("gradient norm per parameter tensor (grey: not finite or not recorded)", fontsize=10)

    shown = 0
    for site in records.sites.values():
        for shares, style, what in ((site.dead, "-", "dead"), (site.saturated, "--", "saturated")):
            points = [(s, d) for s, d in zip(site.steps, shares, strict=True) if d is not None]
            if points:
                dead_ax.plot([s for s, _ in points], [d for _, d in points], style, label=f"{site.name} {what}")
                shown += 1
    dead_ax.set_ylim(-0.02, 1.02)
    dead_ax.set_xlabel("step")
    dead_ax.set_ylabel("share")
    dead_ax.set_title("dead units of rectifier layers (never positive in the batch, solid) and saturated values of "
                      "sigmoid/tanh layers (dashed)", fontsize=9)
    if shown:
        dead_ax.legend(fontsize=7, ncol=2)
    else:
        dead_ax.text(0.5, 0.5, "no rectifier, sigmoid or tanh layer watched", ha="center", transform=dead_ax.transAxes)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
