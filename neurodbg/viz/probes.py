"""The probe curve: cross-validated accuracy (with its spread over folds) and class
separation per layer, chance marked, the best layer starred."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from neurodbg.viz.figures import plt, save_figure

if TYPE_CHECKING:
    from neurodbg.analyze.probes import ProbeReport


def probe_curve(report: ProbeReport, path: Path) -> Path:
    xs = [p.layer if p.layer is not None else i for i, p in enumerate(report.layers)]
    acc = [p.accuracy for p in report.layers]
    spread = [p.accuracy_std for p in report.layers]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110, layout="constrained")
    ax.errorbar(xs, acc, yerr=spread, marker="o", markersize=3, color="#c44222", label="probe accuracy")
    ax.axhline(report.chance, color="#888", linestyle=":", label=f"chance ({report.chance:.2f})")
    best = report.layers.index(report.best)
    ax.plot([xs[best]], [acc[best]], marker="*", markersize=14, color="#c44222", linestyle="none")
    ax.set_xlabel("layer")
    ax.set_ylabel("accuracy (cross-validated)")
    ax.set_ylim(0, 1.02)
    twin = ax.twinx()
    twin.plot(xs, [p.separation for p in report.layers], color="#2255aa", marker=".", label="separation")
    twin.set_ylabel("class separation", color="#2255aa")
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(lines, [str(h.get_label()) for h in lines], fontsize=7, loc="lower right")
    ax.set_title(f"{report.model}: {report.data} ({', '.join(report.classes)}), best layer {report.best.layer}",
                 fontsize=9)
    return save_figure(fig, path)
