"""The MoE report's figure: the share of tokens each expert receives, layers × experts,
on a colour scale centred on an even share (1 / experts), verdicts beside each layer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.colors import TwoSlopeNorm

from neurodbg.viz.figures import plt, save_figure

if TYPE_CHECKING:
    from neurodbg.analyze.moe_report import MoeReport


def moe_heatmap(report: MoeReport, path: Path) -> Path:
    shares = np.array([layer.shares for layer in report.layers])
    experts = shares.shape[1]
    fig, ax = plt.subplots(figsize=(min(16, 3 + 0.35 * experts), 1.5 + 0.32 * len(report.layers)), dpi=110,
                           layout="constrained")
    even = 1 / experts
    image = ax.imshow(shares, aspect="auto", cmap="RdBu_r", interpolation="nearest",
                      norm=TwoSlopeNorm(vcenter=even, vmin=0.0, vmax=max(float(shares.max()), 2 * even)))
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.set_yticks(range(len(report.layers)),
                  [f"{layer.layer}  {', '.join(layer.verdicts)}" for layer in report.layers], fontsize=7)
    ax.set_xticks(range(experts), [str(e) for e in range(experts)] if experts <= 32 else None, fontsize=7)
    fig.colorbar(image, ax=ax, label=f"share of routed tokens (even: {even:.3f})")
    ax.set_title(f"{report.model}: expert shares over {report.tokens:,} tokens of {report.corpus}", fontsize=9)
    return save_figure(fig, path)
