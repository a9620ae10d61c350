"""Writing a finished scan into the atlas: every row replaced in one SQLite
transaction (all or nothing: a kill during the write leaves the previous state)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import AtlasError

NeuronRow = tuple[Any, ...]     # the `neurons` table's 13 columns, in schema order
ExemplarRow = tuple[Any, ...]   # (layer, neuron, kind, rank, seq_index, value, acts)


class AtlasWriter:
    """Inserts inside the open transaction of `rewrite`."""

    def __init__(self, store: AtlasStore, conn: sqlite3.Connection) -> None:
        self.store, self.conn = store, conn

    def sequences(self, rows: Sequence[tuple[int, bytes]]) -> None:
        self.conn.executemany("INSERT INTO sequences VALUES (?, ?)", rows)

    def images(self, rows: Sequence[tuple[int, str, int, int, bytes]]) -> None:
        self.conn.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?)", rows)

    def neurons(self, rows: Sequence[NeuronRow]) -> None:
        self.conn.executemany("INSERT INTO neurons VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def exemplars(self, rows: Sequence[ExemplarRow]) -> None:
        self.conn.executemany("INSERT INTO exemplars VALUES (?,?,?,?,?,?,?)", rows)

    def meta(self, **values: Any) -> None:
        self.store.set_meta(self.conn, **values)


@contextmanager
def rewrite(store: AtlasStore) -> Iterator[AtlasWriter]:
    """Replace the atlas's neurons, exemplars, sequences and images; commits only if the block finishes."""
    try:
        with store.transaction() as conn:
            for table in ("neurons", "exemplars", "sequences", "images"):
                conn.execute(f"DELETE FROM {table}")
            yield AtlasWriter(store, conn)
    except sqlite3.Error as exc:
        raise AtlasError(f"could not write the atlas database in {store.directory} ({exc}); the scan is "
                         f"checkpointed: free space and rerun the same command to finish") from None
