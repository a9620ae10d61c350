"""Descriptions in the atlas database: every candidate with its score, a `described`
marker per (neuron, polarity, explainer) so reruns skip finished work, and the
embeddings search uses.

A neuron-polarity's *description* is its best candidate, chosen by one rule
(`BEST_FIRST`): the highest score, unscored last, ties broken by explainer name
and candidate number. Every reader — the neuron page, the Monitor's findings
and clusters, search, steering previews, exports — goes through `best` or
`best_embeddings` below, so they all show the same text for a neuron."""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from neurodbg.atlas.store import AtlasStore
from neurodbg.describe.explanation import Explanation
from neurodbg.errors import AtlasError

COLUMNS = "layer, neuron, polarity, explainer, candidate, text, spec, score, simulator"
BEST_FIRST = "score IS NULL, score DESC, explainer, candidate"   # the one order that picks a description
Key = tuple[int, int, str]                                        # (layer, neuron, polarity)


def _explanation(row: Sequence) -> Explanation:
    return Explanation(layer=row[0], neuron=row[1], polarity=row[2], explainer=row[3], candidate=row[4],
                       text=row[5], spec=_spec(row[6]), score=row[7], simulator=row[8])


def _best_rowids(store: AtlasStore, where: str = "", args: tuple = ()) -> list[int]:
    """The rowid of the best candidate of every (neuron, polarity) that `where` keeps, in (layer, neuron,
    polarity) order. Only keys are sorted: sorting whole rows (texts, specs, embeddings) would spill
    large temporary files."""
    sql = (f"SELECT row_id FROM (SELECT rowid AS row_id, layer, neuron, polarity, ROW_NUMBER() OVER (PARTITION BY "
           f"layer, neuron, polarity ORDER BY {BEST_FIRST}) AS pick FROM descriptions {where}) WHERE pick = 1 "
           f"ORDER BY layer, neuron, polarity")
    return [int(r[0]) for r in store.conn.execute(sql, args)]


ROWIDS_PER_QUERY = 500


def _rows(store: AtlasStore, columns: str, rowids: Sequence[int]) -> Iterator[tuple]:
    """(columns..., rowid) of those rows, in the order given."""
    for start in range(0, len(rowids), ROWIDS_PER_QUERY):
        part = rowids[start:start + ROWIDS_PER_QUERY]
        found = {r[-1]: r for r in store.conn.execute(
            f"SELECT {columns}, rowid FROM descriptions WHERE rowid IN ({','.join('?' * len(part))})", part)}
        yield from (found[rowid] for rowid in part)


def _spec_text(spec: dict | None) -> bytes | None:
    """Specs are stored zlib-compressed (a statistical description's model is a few hundred numbers)."""
    return None if spec is None else zlib.compress(json.dumps(spec, separators=(",", ":")).encode(), 6)


def _spec(value: bytes | str | None) -> dict | None:
    if value is None:
        return None
    return json.loads(zlib.decompress(value) if isinstance(value, bytes) else value)   # older atlases: JSON text


def _keys_filter(keys: Sequence[Key]) -> tuple[str, tuple]:
    values = ",".join("(?,?,?)" for _ in keys)
    return (f"WHERE (layer, neuron, polarity) IN (VALUES {values})",
            tuple(x for key in keys for x in (int(key[0]), int(key[1]), str(key[2]))))


# -- describing ---------------------------------------------------------------------------------
def done(store: AtlasStore, explainer: str) -> set[Key]:
    rows = store.conn.execute("SELECT layer, neuron, polarity FROM described WHERE explainer = ?", (explainer,))
    return {(int(a), int(b), str(c)) for a, b, c in rows}


def save(store: AtlasStore, explanations: Sequence[Explanation], finished: Iterable[Key], explainer: str) -> None:
    """Write a chunk of results in one transaction (a kill loses at most this chunk); an explanation's
    `extra["scores"]` goes to `description_scores`."""
    rows = [(e.layer, e.neuron, e.polarity, e.explainer, e.candidate, e.text, _spec_text(e.spec), e.score,
             e.simulator) for e in explanations]
    marks = [(layer, neuron, polarity, explainer) for layer, neuron, polarity in finished]
    extra = [(e.layer, e.neuron, e.polarity, e.explainer, e.candidate, json.dumps(e.extra["scores"]))
             for e in explanations if e.extra.get("scores")]
    try:
        with store.transaction() as conn:
            conn.executemany(f"INSERT OR REPLACE INTO descriptions ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", rows)
            conn.executemany("INSERT OR REPLACE INTO description_scores VALUES (?,?,?,?,?,?)", extra)
            conn.executemany("INSERT OR REPLACE INTO described VALUES (?,?,?,?)", marks)
    except sqlite3.Error as exc:
        raise AtlasError(f"could not store descriptions in {store.directory} ({exc}); what was stored "
                         f"before is intact, rerun to continue") from None


# -- reading ------------------------------------------------------------------------------------
def for_neuron(store: AtlasStore, layer: int, neuron: int, polarity: str | None = None) -> list[Explanation]:
    """All candidates of one neuron, best first (per polarity, '+' then '-')."""
    sql = f"SELECT {COLUMNS} FROM descriptions WHERE layer = ? AND neuron = ?"
    args: list = [layer, neuron]
    if polarity:
        sql += " AND polarity = ?"
        args.append(polarity)
    return [_explanation(r) for r in store.conn.execute(f"{sql} ORDER BY polarity, {BEST_FIRST}", args)]


def best(store: AtlasStore, *, layers: Sequence[int] | None = None) -> Iterator[Explanation]:
    """The description (best candidate) of every (neuron, polarity), streamed in (layer, neuron, polarity)
    order; `layers` keeps only those layers."""
    where, args = "", tuple[int, ...]()
    if layers is not None:
        where = f"WHERE layer IN ({','.join('?' * len(layers))})"
        args = tuple(int(x) for x in layers)
    for row in _rows(store, COLUMNS, _best_rowids(store, where, args)):
        yield _explanation(row)


def all_scores(store: AtlasStore, explainer: str | None = None) -> Iterator[tuple[Key, dict]]:
    """((layer, neuron, polarity), scores) of every described candidate that has them."""
    sql = "SELECT layer, neuron, polarity, scores FROM description_scores"
    args: tuple = ()
    if explainer:
        sql += " WHERE explainer = ?"
        args = (explainer,)
    for layer, neuron, polarity, scores in store.conn.execute(sql + " ORDER BY layer, neuron, polarity", args):
        yield (int(layer), int(neuron), str(polarity)), json.loads(scores)


def scores_for(store: AtlasStore, layer: int, neuron: int) -> dict[tuple[str, str, int], dict]:
    """{(polarity, explainer, candidate): scores} of one neuron's described candidates."""
    rows = store.conn.execute("SELECT polarity, explainer, candidate, scores FROM description_scores "
                              "WHERE layer = ? AND neuron = ?", (layer, neuron))
    return {(str(p), str(e), int(c)): json.loads(s) for p, e, c, s in rows}


def count(store: AtlasStore) -> int:
    return int(store.conn.execute("SELECT COUNT(*) FROM descriptions").fetchone()[0])


def scores(store: AtlasStore, explainer: str | None = None) -> np.ndarray:
    sql = "SELECT score FROM descriptions WHERE score IS NOT NULL"
    args: tuple = ()
    if explainer:
        sql += " AND explainer = ?"
        args = (explainer,)
    return np.array([r[0] for r in store.conn.execute(sql, args)], dtype=np.float64)


# -- embeddings ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Embedded:
    """Best descriptions with their embeddings, as arrays (the search index's input)."""
    layers: np.ndarray        # int64
    neurons: np.ndarray
    polarities: np.ndarray    # '+' / '-'
    scores: np.ndarray        # float64, NaN where unscored
    texts: list[str]          # '' where a requested key has no description
    vectors: np.ndarray       # float32 [n, dim]; zero rows where there is no embedding (yet)
    rowids: list[int | None]  # the chosen description rows (None: no description)
    embedded: np.ndarray      # bool: the row has an embedding


def unembedded(store: AtlasStore) -> list[tuple[int, str]]:
    """(rowid, text) of every stored candidate that has no embedding yet."""
    return [(int(r[0]), str(r[1])) for r in
            store.conn.execute("SELECT rowid, text FROM descriptions WHERE embedding IS NULL")]


def store_embeddings(store: AtlasStore, rows: Sequence[tuple[int, np.ndarray]]) -> None:
    """Save (rowid, unit float32 vector) pairs in one transaction."""
    try:
        with store.transaction() as conn:
            conn.executemany("UPDATE descriptions SET embedding = ? WHERE rowid = ?",
                             [(np.asarray(v, dtype=np.float32).tobytes(), rowid) for rowid, v in rows])
    except sqlite3.Error as exc:
        raise AtlasError(f"could not store embeddings in {store.directory}: {exc}") from None


KEYS_PER_QUERY = 2000     # three bound variables each, well under SQLite's limit


def best_embeddings(store: AtlasStore, dimensions: int, keys: Sequence[Key] | None = None) -> Embedded:
    """The best descriptions — of every neuron-polarity, or of `keys` in that order — with their
    stored embeddings."""
    columns = "layer, neuron, polarity, score, text, embedding"      # + rowid (from _rows)
    if keys is None:
        rows = list(_rows(store, columns, _best_rowids(store)))
    else:
        found: dict[Key, tuple] = {}
        for start in range(0, len(keys), KEYS_PER_QUERY):
            where, args = _keys_filter(keys[start:start + KEYS_PER_QUERY])
            for r in _rows(store, columns, _best_rowids(store, where, args)):
                found[(int(r[0]), int(r[1]), str(r[2]))] = r
        rows = [found.get(key, (key[0], key[1], key[2], None, "", None, None)) for key in keys]
    vectors = np.zeros((len(rows), dimensions), dtype=np.float32)
    embedded = np.zeros(len(rows), dtype=bool)
    for i, row in enumerate(rows):
        if row[5] is not None:
            vectors[i] = np.frombuffer(row[5], dtype=np.float32)
            embedded[i] = True
    return Embedded(np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int64),
                    np.array([r[2] for r in rows]),
                    np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=np.float64),
                    [r[4] for r in rows], vectors, [r[6] for r in rows], embedded)
