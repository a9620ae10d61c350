"""Exact cosine search over description embeddings, with filters.

The index is a dense float32 matrix of unit vectors; a query is one
matrix-vector product and a partial sort, so results are exact (no approximate
nearest-neighbour structure to tune or distrust)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurodbg.errors import NeurodbgError


@dataclass(frozen=True)
class Hit:
    layer: int
    neuron: int
    polarity: str
    similarity: float
    score: float | None
    text: str

    @property
    def id(self) -> str:
        return f"L{self.layer}/N{self.neuron}{self.polarity}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "layer": self.layer, "neuron": self.neuron, "polarity": self.polarity,
                "similarity": round(self.similarity, 4), "score": self.score, "text": self.text}


class DescriptionIndex:
    def __init__(self, vectors: np.ndarray, layers: np.ndarray, neurons: np.ndarray, polarities: np.ndarray,
                 scores: np.ndarray, texts: list[str]) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.layers, self.neurons = layers.astype(np.int32), neurons.astype(np.int32)
        self.positive = polarities == "+"
        self.scores = scores.astype(np.float32)        # NaN where unscored
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def search(self, query: np.ndarray, k: int = 50, *, layers: Iterable[int] | None = None,
               polarity: str | None = None, min_score: float | None = None) -> list[Hit]:
        """The k most similar descriptions; `layers` keeps only those layer indices (a list, set or range)."""
        if k <= 0:
            raise NeurodbgError(f"k must be positive (got {k})")
        if polarity not in (None, "+", "-"):
            raise NeurodbgError(f"polarity must be '+' or '-' (got {polarity!r})")
        sims = self.vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
        mask = None
        if layers is not None:
            mask = np.isin(self.layers, np.fromiter(layers, dtype=np.int64))
        if polarity is not None:
            m = self.positive if polarity == "+" else ~self.positive
            mask = m if mask is None else mask & m
        if min_score is not None:
            m = self.scores >= min_score       # NaN (unscored) never passes
            mask = m if mask is None else mask & m
        if mask is not None:
            sims = np.where(mask, sims, -np.inf)
            k = min(k, int(mask.sum()))
        k = min(k, len(sims))
        if k == 0:
            return []
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.lexsort((top, -sims[top]))]          # by similarity, ties by position: deterministic
        return [Hit(int(self.layers[i]), int(self.neurons[i]), "+" if self.positive[i] else "-",
                    float(sims[i]), None if np.isnan(self.scores[i]) else float(self.scores[i]), self.texts[i])
                for i in top]
