"""What the analyses need from an atlas, loaded once: each neuron's tail
quantiles as [layers, neurons] arrays, and descriptions (with embeddings) by id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurodbg.atlas.binding import check_model
from neurodbg.atlas.records import require_complete
from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import NeurodbgError
from neurodbg.model import Model


@dataclass(frozen=True)
class Description:
    text: str
    score: float | None
    explainer: str


class AtlasView:
    def __init__(self, store: AtlasStore, model: Model | None = None) -> None:
        require_complete(store)
        if model is not None:
            check_model(store, model)
        self.store = store
        rows = store.conn.execute("SELECT layer, neuron, quantiles FROM neurons").fetchall()
        self.layers = sorted({int(r[0]) for r in rows})
        self.width = max(int(r[1]) for r in rows) + 1
        levels = json.loads(rows[0][2]).keys()
        shape = (max(self.layers) + 1, self.width)
        self._quantiles = {key: np.full(shape, np.nan) for key in levels}
        for layer, neuron, text in rows:
            for key, value in json.loads(text).items():
                if value is not None:
                    self._quantiles[key][layer, neuron] = value
        self._descriptions: dict[tuple[int, int, str], Description] | None = None
        self._search: Any = None

    def search(self) -> Any:
        """The description search index, loaded once (an `AtlasSearch`)."""
        if self._search is None:
            from neurodbg.search.atlas_search import AtlasSearch

            self._search = AtlasSearch(self.store)
        return self._search

    def quantile(self, level: float, polarity: str = "+") -> np.ndarray:
        """[layers, neurons] values of one tail level (e.g. 1e-4, '+' upper, '-' lower)."""
        key = f"{polarity}{level:g}"
        if key not in self._quantiles:
            have = sorted({k[1:] for k in self._quantiles})
            raise NeurodbgError(f"the atlas has no {level:g} quantile; it has {', '.join(have)}")
        values = self._quantiles[key]
        if np.isnan(values[self.layers]).all():
            raise NeurodbgError(f"the atlas's {level:g} quantiles are unavailable (too few tokens scanned)")
        return values

    def descriptions(self) -> dict[tuple[int, int, str], Description]:
        """The best-scored description of every (layer, neuron, polarity)."""
        if self._descriptions is None:
            self._descriptions = {}
            for layer, neuron, polarity, text, score, explainer in self.store.conn.execute(
                    "SELECT layer, neuron, polarity, text, score, explainer FROM descriptions "
                    "ORDER BY layer, neuron, polarity, score IS NULL, score DESC"):
                key = (int(layer), int(neuron), str(polarity))
                if key not in self._descriptions:
                    self._descriptions[key] = Description(text, score, explainer)
        return self._descriptions

    def embeddings(self, keys: list[tuple[int, int, str]]) -> np.ndarray:
        """Unit embeddings of those neurons' best descriptions; zeros where a neuron has none.
        Missing embeddings are computed (for these rows only) and stored."""
        import sqlite3

        from neurodbg.errors import AtlasError
        from neurodbg.search.atlas_search import searchable
        from neurodbg.search.embedder import DIMENSIONS, embed

        out = np.zeros((len(keys), DIMENSIONS), dtype=np.float32)
        missing: list[tuple[int, int, str]] = []
        for i, (layer, neuron, polarity) in enumerate(keys):
            row = self.store.conn.execute(
                "SELECT rowid, text, embedding FROM descriptions WHERE layer = ? AND neuron = ? AND polarity = ? "
                "ORDER BY score IS NULL, score DESC LIMIT 1", (layer, neuron, polarity)).fetchone()
            if row is None:
                continue
            if row[2] is not None:
                out[i] = np.frombuffer(row[2], dtype=np.float32)
            else:
                missing.append((i, row[0], row[1]))
        if missing:
            vectors = embed([searchable(text) for _, _, text in missing])
            for (i, _, _), v in zip(missing, vectors, strict=True):
                out[i] = v
            try:
                with self.store.transaction() as conn:
                    conn.executemany("UPDATE descriptions SET embedding = ? WHERE rowid = ?",
                                     [(v.tobytes(), rowid) for (_, rowid, _), v in zip(missing, vectors, strict=True)])
            except sqlite3.Error as exc:
                raise AtlasError(f"could not store embeddings in {self.store.directory}: {exc}") from None
        return out
