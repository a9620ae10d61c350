"""The tuned lens's scorecard: held-out KL to the final distribution per layer, logit lens
against tuned lens."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from neurodbg.viz.figures import plt, save_figure

if TYPE_CHECKING:
    from neurodbg.analyze.tuned_lens_training import LensEvaluation


def kl_curve(evaluation: LensEvaluation, path: Path, *, title: str = "") -> Path:
    layers = list(range(len(evaluation.logit_kl)))
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=110, layout="constrained")
    ax.plot(layers, evaluation.logit_kl, marker="o", markersize=3, color="#888", label="logit lens")
    ax.plot(layers, evaluation.tuned_kl, marker="o", markersize=3, color="#c44222", label="tuned lens")
    ax.set_xlabel("layer")
    ax.set_ylabel("KL(final ‖ lens), nats/token")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title(title or f"held-out KL to the model's own next-token distribution ({evaluation.tokens:,} tokens)",
                 fontsize=9)
    return save_figure(fig, path)
