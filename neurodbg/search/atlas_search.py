"""Search an atlas's descriptions by meaning.

Each (neuron, polarity) is represented by its description: the best candidate
(`atlas.descriptions.best`, the rule every reader shares). Embeddings are
computed once and kept in the database next to the text, so later searches
only embed the query."""

from __future__ import annotations

import re
from collections.abc import Iterable

from neurodbg.atlas import descriptions
from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import NeurodbgError
from neurodbg.search.embedder import DIMENSIONS, embed
from neurodbg.search.index import DescriptionIndex, Hit

_LEADS = ("Fires on the tokens ", "Goes negative on the tokens ", "Fires on ", "Goes negative on ")
_QUOTED = re.compile(r"“([^”]*)”")
# What `searchable` makes of a description; an atlas embedded with another version is re-embedded.
EMBEDDING_FORMAT = "input-concept-2"


def _unquote(match: re.Match[str]) -> str:
    token = match.group(1).strip()
    return token if any(c.isalnum() for c in token) else f'"{token}"'   # punctuation stays recognisable


def searchable(text: str) -> str:
    """What a description is embedded as — for search and clustering: the input-side concept,
    what drives the neuron. The statistical explainer's fixed phrasing ("Fires on the tokens …")
    and its output-token clause ("Promotes …") would otherwise make every description look alike
    to the embedder; the typographic quotes around tokens cost the embedder two word pieces each
    and say nothing (without them it embeds 1.4× faster). The full text stays for display."""
    core = text.split(" Promotes ", 1)[0]
    for lead in _LEADS:
        if core.startswith(lead):
            core = core[len(lead):]
            break
    return _QUOTED.sub(_unquote, core)


def embed_rows(store: AtlasStore, rows: list[tuple[int, str]], *, batch: int = 2048, progress: bool = False) -> int:
    """Embed (rowid, text) descriptions and store the vectors; returns how many. Equal concepts
    (the same searchable text) are embedded once."""
    from neurodbg.progress import RateProgress

    with RateProgress(progress and bool(rows), "embedding descriptions", len(rows), unit="descriptions") as bar:
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch]
            concepts = [searchable(text) for _, text in part]
            unique = list(dict.fromkeys(concepts))
            vectors = embed(unique)
            where = {concept: i for i, concept in enumerate(unique)}
            descriptions.store_embeddings(store, [(rowid, vectors[where[c]])
                                                  for (rowid, _), c in zip(part, concepts, strict=True)])
            bar.advance(len(part))
    return len(rows)


def ensure_format(store: AtlasStore) -> None:
    """Drop embeddings made from an older `searchable` text, so they are recomputed."""
    if store.get("embedding_format") == EMBEDDING_FORMAT:
        return
    with store.transaction() as conn:
        conn.execute("UPDATE descriptions SET embedding = NULL WHERE embedding IS NOT NULL")
        store.put_meta(conn, embedding_format=EMBEDDING_FORMAT)


def ensure_embeddings(store: AtlasStore, *, batch: int = 2048, progress: bool = False) -> int:
    """Embed every stored description that has no embedding yet (or one of an older format);
    returns how many."""
    ensure_format(store)
    return embed_rows(store, descriptions.unembedded(store), batch=batch, progress=progress)


def load_index(store: AtlasStore) -> DescriptionIndex:
    if descriptions.count(store) == 0:
        raise NeurodbgError(f"{store.directory} has no descriptions yet; run `neurodbg describe --atlas "
                            f"{store.directory}` first")
    ensure_embeddings(store)
    found = descriptions.best_embeddings(store, DIMENSIONS)
    return DescriptionIndex(found.vectors, found.layers, found.neurons, found.polarities, found.scores, found.texts)


class AtlasSearch:
    """A loaded index plus the query embedder: `AtlasSearch(store).search("dates", k=10)`."""

    def __init__(self, store: AtlasStore) -> None:
        self.index = load_index(store)

    def search(self, query: str, k: int = 50, *, layers: Iterable[int] | None = None,
               polarity: str | None = None, min_score: float | None = None) -> list[Hit]:
        """`layers`: only these layers (any collection of layer indices, e.g. `[1, 5, 9]` or `range(3, 8)`)."""
        if not query.strip():
            raise NeurodbgError("the search query is empty")
        return self.index.search(embed([query])[0], k, layers=layers, polarity=polarity, min_score=min_score)
