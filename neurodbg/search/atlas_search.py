"""Search an atlas's descriptions by meaning.

Each (neuron, polarity) is represented by its description: the best-scored
candidate. Embeddings are computed once and kept in the database next to the
text, so later searches only embed the query."""

from __future__ import annotations

import sqlite3

import numpy as np

from neurodbg.atlas.store import AtlasStore
from neurodbg.describe import storage
from neurodbg.errors import AtlasError, NeurodbgError
from neurodbg.search.embedder import DIMENSIONS, embed
from neurodbg.search.index import DescriptionIndex, Hit

_LEADS = ("Fires on the tokens ", "Goes negative on the tokens ", "Fires on ", "Goes negative on ")


def searchable(text: str) -> str:
    """What a description is embedded as: what the neuron responds to. The statistical
    explainer's fixed phrasing ("Fires on the tokens …") and its output-token clause
    ("Promotes …") would otherwise make every description look alike to the embedder."""
    core = text.split(" Promotes ", 1)[0]
    for lead in _LEADS:
        if core.startswith(lead):
            return core[len(lead):]
    return core


def ensure_embeddings(store: AtlasStore, *, batch: int = 2048, progress: bool = False) -> int:
    """Embed every stored description that has no embedding yet; returns how many."""
    from neurodbg.scan.progress import ScanProgress

    rows = store.conn.execute("SELECT rowid, text FROM descriptions WHERE embedding IS NULL").fetchall()
    with ScanProgress(progress and bool(rows), "embedding descriptions", len(rows), unit="descriptions") as bar:
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch]
            vectors = embed([searchable(text) for _, text in part])
            try:
                with store.transaction() as conn:
                    conn.executemany("UPDATE descriptions SET embedding = ? WHERE rowid = ?",
                                     [(v.tobytes(), rowid) for (rowid, _), v in zip(part, vectors, strict=True)])
            except sqlite3.Error as exc:
                raise AtlasError(f"could not store embeddings in {store.directory}: {exc}") from None
            bar.advance(len(part))
    return len(rows)


def load_index(store: AtlasStore) -> DescriptionIndex:
    if storage.count(store) == 0:
        raise NeurodbgError(f"{store.directory} has no descriptions yet; run `neurodbg describe --atlas "
                            f"{store.directory}` first")
    ensure_embeddings(store)
    rows = store.conn.execute(
        "SELECT layer, neuron, polarity, score, text, embedding FROM descriptions "
        "ORDER BY layer, neuron, polarity, score IS NULL, score DESC, explainer, candidate").fetchall()
    best: list[tuple] = []
    for row in rows:
        if not best or best[-1][:3] != row[:3]:
            best.append(row)
    vectors = np.frombuffer(b"".join(r[5] for r in best), dtype=np.float32).reshape(len(best), DIMENSIONS)
    return DescriptionIndex(
        vectors, np.array([r[0] for r in best]), np.array([r[1] for r in best]), np.array([r[2] for r in best]),
        np.array([np.nan if r[3] is None else r[3] for r in best], dtype=np.float64), [r[4] for r in best])


class AtlasSearch:
    """A loaded index plus the query embedder: `AtlasSearch(store).search("dates", k=10)`."""

    def __init__(self, store: AtlasStore) -> None:
        self.index = load_index(store)

    def search(self, query: str, k: int = 50, *, layers: tuple[int, int] | None = None,
               polarity: str | None = None, min_score: float | None = None) -> list[Hit]:
        if not query.strip():
            raise NeurodbgError("the search query is empty")
        return self.index.search(embed([query])[0], k, layers=layers, polarity=polarity, min_score=min_score)
