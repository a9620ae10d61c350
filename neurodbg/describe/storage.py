"""Descriptions in the atlas database: every candidate with its score, and a
`described` marker per (neuron, polarity, explainer) so reruns skip finished work."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

import numpy as np

from neurodbg.atlas.store import AtlasStore
from neurodbg.describe.explanation import Explanation
from neurodbg.errors import AtlasError

_COLUMNS = "layer, neuron, polarity, explainer, candidate, text, spec, score, simulator"


def done(store: AtlasStore, explainer: str) -> set[tuple[int, int, str]]:
    rows = store.conn.execute("SELECT layer, neuron, polarity FROM described WHERE explainer = ?", (explainer,))
    return {(int(a), int(b), str(c)) for a, b, c in rows}


def save(store: AtlasStore, explanations: Iterable[Explanation], finished: Iterable[tuple[int, int, str]],
         explainer: str) -> None:
    """Write a chunk of results in one transaction (a kill loses at most this chunk)."""
    rows = [(e.layer, e.neuron, e.polarity, e.explainer, e.candidate, e.text,
             json.dumps(e.spec) if e.spec is not None else None, e.score, e.simulator) for e in explanations]
    marks = [(layer, neuron, polarity, explainer) for layer, neuron, polarity in finished]
    try:
        with store.transaction() as conn:
            conn.executemany(f"INSERT OR REPLACE INTO descriptions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", rows)
            conn.executemany("INSERT OR REPLACE INTO described VALUES (?,?,?,?)", marks)
    except sqlite3.Error as exc:
        raise AtlasError(f"could not store descriptions in {store.directory} ({exc}); what was stored "
                         f"before is intact, rerun to continue") from None


def _explanation(row: tuple) -> Explanation:
    return Explanation(layer=row[0], neuron=row[1], polarity=row[2], explainer=row[3], candidate=row[4],
                       text=row[5], spec=json.loads(row[6]) if row[6] else None, score=row[7], simulator=row[8])


def for_neuron(store: AtlasStore, layer: int, neuron: int, polarity: str | None = None) -> list[Explanation]:
    """All candidates, best first."""
    sql = f"SELECT {_COLUMNS} FROM descriptions WHERE layer = ? AND neuron = ?"
    args: list = [layer, neuron]
    if polarity:
        sql += " AND polarity = ?"
        args.append(polarity)
    rows = store.conn.execute(sql + " ORDER BY polarity, score IS NULL, score DESC, explainer, candidate", args)
    return [_explanation(r) for r in rows]


def best(store: AtlasStore) -> list[Explanation]:
    """The best-scored candidate of every (neuron, polarity): its description."""
    rows = store.conn.execute(
        f"SELECT {_COLUMNS} FROM descriptions ORDER BY layer, neuron, polarity, score IS NULL, score DESC, "
        "explainer, candidate")
    out: list[Explanation] = []
    for row in rows:
        if not out or (out[-1].layer, out[-1].neuron, out[-1].polarity) != row[:3]:
            out.append(_explanation(row))
    return out


def count(store: AtlasStore) -> int:
    return int(store.conn.execute("SELECT COUNT(*) FROM descriptions").fetchone()[0])


def scores(store: AtlasStore, explainer: str | None = None) -> np.ndarray:
    sql = "SELECT score FROM descriptions WHERE score IS NOT NULL"
    args: tuple = ()
    if explainer:
        sql += " AND explainer = ?"
        args = (explainer,)
    return np.array([r[0] for r in store.conn.execute(sql, args)], dtype=np.float64)
