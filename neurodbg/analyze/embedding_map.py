"""Embedding maps: where words and phrases sit in the model's own spaces, drawn in two
dimensions, with their nearest neighbours by cosine.

- `token` kind: a word's vector is the mean of its tokens' rows of the input embedding
  matrix (the word tokenised as typed, without special tokens: "cat" and " cat" are
  different tokens in most BPE vocabularies). Its neighbours are the vocabulary's
  nearest tokens to that vector (the word's own tokens left out).
- `contextual` kind: the residual stream after `layer` (default: the middle layer),
  averaged over the word's tokens where it stands in a context sentence — written
  "bank@I sat on the river bank" — or in the word alone. The same word in two contexts
  is two points ("bank" by a river and at a bank). Its neighbours are the other items.
- The 2-D layout is scikit-learn's PCA (with the variance it explains) or t-SNE, or
  UMAP (umap-learn) where it is installed; the similarities are exact cosines of the
  full vectors, never of the 2-D points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from neurodbg.errors import NeurodbgError, PromptError
from neurodbg.model import Model

Kind = Literal["token", "contextual"]
Method = Literal["pca", "tsne", "umap"]
MAX_ITEMS = 200


@dataclass
class Item:
    label: str                       # as the user wrote it
    word: str
    context: str | None              # the sentence the word stands in (contextual kind)
    tokens: list[str]                # the word's tokens


@dataclass
class EmbeddingMap:
    model: str
    kind: Kind
    layer: int | None
    method: Method
    items: list[Item]
    vectors: np.ndarray              # [items, d] (float64)
    points: np.ndarray               # [items, 2]
    similarity: np.ndarray           # [items, items] cosine of the full vectors
    neighbours: list[list[dict[str, Any]]]
    explained: list[float] = field(default_factory=list)   # PCA: share of variance of each axis
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "kind": self.kind, "layer": self.layer, "method": self.method,
                "explained_variance": [round(v, 6) for v in self.explained],
                "items": [{"label": it.label, "word": it.word, "context": it.context, "tokens": it.tokens,
                           "x": round(float(p[0]), 6), "y": round(float(p[1]), 6), "neighbours": nb}
                          for it, p, nb in zip(self.items, self.points, self.neighbours, strict=True)],
                "similarity": np.round(self.similarity, 6).tolist(), "notes": self.notes}

    def figure(self, path: str | Path) -> Path:
        from neurodbg.viz.embedding_map import embedding_scatter

        return embedding_scatter(self, Path(path))


def parse_item(text: str, kind: Kind) -> tuple[str, str | None]:
    """'word' or, for the contextual kind, 'word@context sentence' (the word must occur in it)."""
    if not text.strip():
        raise PromptError("an embedding-map item is empty")
    if kind == "contextual" and "@" in text:
        word, context = text.split("@", 1)
        if not word.strip() or not context.strip():
            raise PromptError(f"{text!r}: write a contextual item as word@sentence, both non-empty")
        if word not in context:
            raise PromptError(f"{text!r}: {word!r} does not occur in its sentence")
        return word, context
    return text, None


def _token_vectors(model: Model, words: list[str]) -> tuple[np.ndarray, list[list[int]]]:
    tok = model.tokenizer
    table = model.module.get_input_embeddings().weight.detach()   # type: ignore[operator]
    vectors, ids_of = [], []
    for word in words:
        ids = tok(word, add_special_tokens=False)["input_ids"]
        if not ids:
            raise PromptError(f"{word!r} tokenises to nothing")
        vectors.append(table[ids].double().mean(0).cpu().numpy())
        ids_of.append(list(ids))
    return np.stack(vectors), ids_of


@torch.no_grad()
def _contextual_vectors(model: Model, pairs: list[tuple[str, str | None]], layer: int
                        ) -> tuple[np.ndarray, list[list[int]]]:
    tok = model.tokenizer
    site = f"layers.{layer}.resid_out"
    vectors, ids_of = [], []
    for word, context in pairs:
        text = context if context is not None else word
        enc = tok(text, return_offsets_mapping=True)
        start = text.rfind(word) if context is not None else 0      # the last occurrence: "the bank ... bank"
        end = start + len(word)
        span = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start]
        if not span:
            raise PromptError(f"{word!r} has no tokens of its own in {text!r}")
        ids = torch.tensor([enc["input_ids"]], device=model.device)
        with model.trace(capture=[site]) as tr:
            tr.forward({"input_ids": ids})
        vectors.append(tr[site][0, span].double().mean(0).cpu().numpy())
        ids_of.append([enc["input_ids"][i] for i in span])
    return np.stack(vectors), ids_of


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return an @ bn.T


def layout(vectors: np.ndarray, method: Method, seed: int) -> tuple[np.ndarray, list[float]]:
    """[n, 2] points of the vectors, and (PCA) each axis's share of the variance."""
    n = len(vectors)
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(vectors)
        return pca.transform(vectors), [float(v) for v in pca.explained_variance_ratio_]
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = max(1.0, min(30.0, (n - 1) / 3))     # t-SNE needs perplexity < n
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors), []
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise NeurodbgError("UMAP needs umap-learn, which is not installed here: pip install umap-learn "
                                "(or use --method pca or tsne)") from None
        if n < 4:
            raise NeurodbgError(f"UMAP needs at least 4 items, not {n} (use --method pca)")
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, init="random",
                            n_jobs=1)
        return np.asarray(reducer.fit_transform(vectors)), []
    raise NeurodbgError(f"unknown map method {method!r}: pca, tsne or umap")


def _vocabulary_neighbours(model: Model, vectors: np.ndarray, own: list[list[int]], k: int
                           ) -> list[list[dict[str, Any]]]:
    table = model.module.get_input_embeddings().weight.detach().double().cpu().numpy()   # type: ignore[operator]
    sims = cosine_matrix(vectors, table)
    out = []
    for row, skip in zip(sims, own, strict=True):
        row = row.copy()
        row[skip] = -np.inf
        best = np.argsort(-row, kind="stable")[:k]
        out.append([{"token": model.tokenizer.decode([int(i)]), "id": int(i), "cosine": round(float(row[i]), 6)}
                    for i in best])
    return out


def _item_neighbours(items: list[Item], similarity: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
    out = []
    for i in range(len(items)):
        order = [j for j in np.argsort(-similarity[i], kind="stable") if j != i][:k]
        out.append([{"label": items[j].label, "cosine": round(float(similarity[i, j]), 6)} for j in order])
    return out


def embedding_map(model: Model, items: list[str], *, kind: Kind = "token", layer: int | None = None,
                  method: Method = "pca", neighbours: int = 5, seed: int = 0) -> EmbeddingMap:
    """Vectors, 2-D layout, cosines and nearest neighbours of `items` (see the module docstring)."""
    if model.tokenizer is None:
        raise NeurodbgError(f"{model.name} has no tokenizer: embedding maps are of words")
    if kind not in ("token", "contextual"):
        raise NeurodbgError(f"unknown embedding kind {kind!r}: token or contextual")
    if method not in ("pca", "tsne", "umap"):
        raise NeurodbgError(f"unknown map method {method!r}: pca, tsne or umap")
    if not 2 <= len(items) <= MAX_ITEMS:
        raise NeurodbgError(f"an embedding map takes 2 to {MAX_ITEMS} items, not {len(items)}")
    if neighbours < 0:
        raise NeurodbgError(f"neighbours must be 0 or more, not {neighbours}")
    pairs = [parse_item(text, kind) for text in items]
    if kind == "token":
        layer = None
        vectors, ids_of = _token_vectors(model, [w for w, _ in pairs])
    else:
        layer = model.n_layers // 2 if layer is None else layer
        if not 0 <= layer < model.n_layers:
            raise NeurodbgError(f"layer {layer} is outside 0-{model.n_layers - 1}")
        vectors, ids_of = _contextual_vectors(model, pairs, layer)
    tok = model.tokenizer
    parsed = [Item(text, w, c, [tok.decode([i]) for i in ids]) for text, (w, c), ids in zip(items, pairs, ids_of,
                                                                                           strict=True)]
    notes = []
    if kind == "contextual" and any(c is None for _, c in pairs):
        notes.append("items without a context start the sequence: at the first position a model's residual "
                     "stream is dominated by its first-token activations, so those items look alike; give "
                     "them a sentence (word@sentence)")
    points, explained = layout(vectors, method, seed)
    similarity = cosine_matrix(vectors, vectors)
    near = (_vocabulary_neighbours(model, vectors, ids_of, neighbours) if kind == "token"
            else _item_neighbours(parsed, similarity, neighbours))
    return EmbeddingMap(model.name, kind, layer, method, parsed, vectors, np.asarray(points, dtype=np.float64),
                        similarity, near, explained, notes)
