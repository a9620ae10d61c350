"""The embedding map: each item a labelled point of the 2-D layout, with a line from it to
its nearest item by cosine of the full vectors (so closeness the layout distorts still shows)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neurodbg.viz.figures import plt, save_figure

if TYPE_CHECKING:
    from neurodbg.analyze.embedding_map import EmbeddingMap


def embedding_scatter(result: EmbeddingMap, path: Path) -> Path:
    pts = result.points
    fig, ax = plt.subplots(figsize=(7, 5.5), dpi=110, layout="constrained")
    sims = result.similarity.copy()
    np.fill_diagonal(sims, -np.inf)
    for i, j in enumerate(sims.argmax(axis=1)):
        ax.plot(pts[[i, j], 0], pts[[i, j], 1], color="#bbb", linewidth=0.8, zorder=1)
    contexts = [it.context is not None for it in result.items]
    colours = ["#c44222" if c else "#2255aa" for c in contexts]
    ax.scatter(pts[:, 0], pts[:, 1], c=colours, s=28, zorder=2)
    for item, (x, y) in zip(result.items, pts, strict=True):
        label = item.word if item.context is None else f"{item.word} ({_short(item.context)})"
        ax.annotate(label, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    axes = {"pca": "PC", "tsne": "t-SNE ", "umap": "UMAP "}[result.method]
    if result.explained:
        ax.set_xlabel(f"PC1 ({result.explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({result.explained[1]:.0%} of variance)")
    else:
        ax.set_xlabel(f"{axes}1")
        ax.set_ylabel(f"{axes}2")
    space = "token embeddings" if result.kind == "token" else f"residual stream after layer {result.layer}"
    ax.set_title(f"{result.model}: {space} ({result.method}); grey: nearest item by cosine", fontsize=9)
    return save_figure(fig, path)


def _short(text: str, most: int = 28) -> str:
    return text if len(text) <= most else text[:most - 1] + "…"
