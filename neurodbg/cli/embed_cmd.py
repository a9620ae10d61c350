"""`neurodbg embeddings`: where words sit in the model's spaces (`analyze.embedding_map`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurodbg.cli.common import JsonOpt, ModelOpt, console, emit_result, load
from neurodbg.errors import NeurodbgError


def embeddings(
    items: Annotated[list[str], typer.Argument(help="Words or phrases; with --kind contextual also "
                                                    "word@sentence (the word where it stands in the sentence).")],
    kind: Annotated[str, typer.Option(help="token: the input embedding matrix; contextual: the residual stream "
                                           "after --layer.")] = "token",
    layer: Annotated[int | None, typer.Option(min=0, help="Layer of the contextual kind (default: the middle).")]
    = None,
    method: Annotated[str, typer.Option(help="2-D layout: pca, tsne or umap (umap-learn).")] = "pca",
    neighbours: Annotated[int, typer.Option(min=0, max=100, help="Nearest neighbours by cosine per item "
                                                                 "(vocabulary tokens, or other items).")] = 5,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    png: Annotated[Path | None, typer.Option(help="Write the map here.")] = None,
    model: ModelOpt = "default",
    json_out: JsonOpt = False,
) -> None:
    """Embedding map: 2-D layout, cosines and nearest neighbours of words (token or contextual embeddings)."""
    from neurodbg.analyze.embedding_map import embedding_map

    if kind not in ("token", "contextual"):
        raise NeurodbgError(f"--kind is token or contextual, not {kind!r}")
    if method not in ("pca", "tsne", "umap"):
        raise NeurodbgError(f"--method is pca, tsne or umap, not {method!r}")
    m = load(model, quiet=json_out)
    result = embedding_map(m, items, kind="token" if kind == "token" else "contextual", layer=layer,
                           method="pca" if method == "pca" else "tsne" if method == "tsne" else "umap",
                           neighbours=neighbours, seed=seed)
    out = emit_result(result, png, json_out)
    if out is None:
        return
    space = "token embeddings" if result.kind == "token" else f"residual stream after layer {result.layer}"
    console.print(f"{result.model}: {space}, {result.method}", markup=False)
    for entry in out["items"]:
        near = ", ".join(f"{n.get('token', n.get('label'))!r} {n['cosine']:.3f}" for n in entry["neighbours"])
        console.print(f"{entry['label']!r} ({' '.join(map(repr, entry['tokens']))})  ({entry['x']:+.2f}, "
                      f"{entry['y']:+.2f})  nearest: {near}", markup=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
