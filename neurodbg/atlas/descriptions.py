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
                       text=row[5], spec=json.loads(row[6]) if row[6] else None, score=row[7], simulator=row[8])


def _best_sql(columns: str, where: str = "", then: str = "") -> str:
    """The best candidate of every (neuron, polarity) that `where` keeps (and `then` keeps of those),
    in (layer, neuron, polarity) order. `row_id` names the chosen row."""
    return (f"SELECT {columns} FROM (SELECT *, rowid AS row_id, ROW_NUMBER() OVER (PARTITION BY layer, neuron, "
            f"polarity ORDER BY {BEST_FIRST}) AS pick FROM descriptions {where}) WHERE pick = 1 {then} "
            f"ORDER BY layer, neuron, polarity")


def _keys_filter(keys: Sequence[Key]) -> tuple[str, tuple]:
    values = ",".join("(?,?,?)" for _ in keys)
    return (f"WHERE (layer, neuron, polarity) IN (VALUES {values})",
            tuple(x for key in keys for x in (int(key[0]), int(key[1]), str(key[2]))))


# -- describing ---------------------------------------------------------------------------------
def done(store: AtlasStore, explainer: str) -> set[Key]:
    rows = store.conn.execute("SELECT layer, neuron, polarity FROM described WHERE explainer = ?", (explainer,))
    return {(int(a), int(b), str(c)) for a, b, c in rows}


def save(store: AtlasStore, explanations: Iterable[Explanation], finished: Iterable[Key], explainer: str) -> None:
    """Write a chunk of results in one transaction (a kill loses at most this chunk)."""
    rows = [(e.layer, e.neuron, e.polarity, e.explainer, e.candidate, e.text,
             json.dumps(e.spec) if e.spec is not None else None, e.score, e.simulator) for e in explanations]
    marks = [(layer, neuron, polarity, explainer) for layer, neuron, polarity in finished]
    try:
        with store.transaction() as conn:
            conn.executemany(f"INSERT OR REPLACE INTO descriptions ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", rows)
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
    for row in store.conn.execute(_best_sql(COLUMNS, where), args):
        yield _explanation(row)


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
    columns = "layer, neuron, polarity, score, text, embedding, row_id"
    if keys is None:
        rows = store.conn.execute(_best_sql(columns)).fetchall()
    else:
        found: dict[Key, tuple] = {}
        for start in range(0, len(keys), KEYS_PER_QUERY):
            where, args = _keys_filter(keys[start:start + KEYS_PER_QUERY])
            for r in store.conn.execute(_best_sql(columns, where), args):
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
