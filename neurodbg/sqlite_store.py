"""What the atlas and a training run share: a directory holding one SQLite database
in WAL mode (readers see committed data while one writer appends), transactions
that take the write lock up front, and a key/value `meta` table whose values are
JSON (or plain text)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar


def connect(db: Path) -> sqlite3.Connection:
    """Autocommit connection (transactions are explicit), WAL, usable from the writer thread too."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


_Store = TypeVar("_Store", bound="SqliteStore")


class SqliteStore:
    def __init__(self, directory: Path, conn: sqlite3.Connection) -> None:
        self.directory = directory
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def get(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def get_json(self, key: str) -> Any:
        """A meta value decoded from JSON (a plain string as it is); None when absent."""
        value = self.get(key)
        if value is None:
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value

    def meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.conn.execute("SELECT key, value FROM meta ORDER BY key"):
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
        return out

    @staticmethod
    def put_meta(conn: sqlite3.Connection, **values: Any) -> None:
        """Inside a transaction: set meta keys (strings as they are, anything else as JSON)."""
        for key, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value)
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, text))
