"""What the analyses need from an atlas, loaded once: each neuron's tail
quantiles as [layers, neurons] arrays, and descriptions (with embeddings) by id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurodbg.atlas import descriptions, records
from neurodbg.atlas.binding import check_model
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
        records.require_complete(store)
        if model is not None:
            check_model(store, model)
        self.store = store
        rows = records.quantile_rows(store)
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
        """The description (best candidate) of every (layer, neuron, polarity)."""
        if self._descriptions is None:
            self._descriptions = {(e.layer, e.neuron, e.polarity): Description(e.text, e.score, e.explainer)
                                  for e in descriptions.best(self.store)}
        return self._descriptions

    def embeddings(self, keys: list[tuple[int, int, str]]) -> np.ndarray:
        """Unit embeddings of those neurons' descriptions; zeros where a neuron has none.
        Missing embeddings are computed (for these rows only) and stored."""
        from neurodbg.search.atlas_search import embed_rows, ensure_format
        from neurodbg.search.embedder import DIMENSIONS

        ensure_format(self.store)
        found = descriptions.best_embeddings(self.store, DIMENSIONS, keys)
        missing = [(rowid, found.texts[i]) for i, rowid in enumerate(found.rowids)
                   if rowid is not None and not found.embedded[i]]
        if missing:
            embed_rows(self.store, missing)
            found = descriptions.best_embeddings(self.store, DIMENSIONS, keys)
        return found.vectors
