"""The atlas store: one SQLite database (WAL) in the atlas directory.

It holds the schema version, the model, corpus and settings fingerprints, and
the per-neuron records. Opening checks that the directory really is an atlas
and that the database is intact; a scan with another model, corpus or settings
is refused before anything is written."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from neurodbg.atlas.schema import DB_NAME, READABLE_VERSIONS, SCHEMA, SCHEMA_VERSION
from neurodbg.errors import AtlasError, AtlasMismatchError

IDENTITY_KEYS = ("model_fingerprint", "corpus_fingerprint", "settings_fingerprint")


class AtlasStore:
    def __init__(self, directory: Path, conn: sqlite3.Connection) -> None:
        self.directory = directory
        self.conn = conn

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path, *, create: bool = False) -> AtlasStore:
        path = Path(directory).expanduser()
        db = path / DB_NAME
        if not db.is_file():
            if not create:
                if not path.exists():
                    raise AtlasError(f"no atlas at {path}: the directory does not exist")
                raise AtlasError(f"{path} is not an atlas (no {DB_NAME}); run `neurodbg scan` to make one")
            if path.exists() and not path.is_dir():
                raise AtlasError(f"{path} exists and is not a directory")
            if path.is_dir() and any(p.name not in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm")
                                     for p in path.iterdir()):
                raise AtlasError(f"{path} is a non-empty directory that is not an atlas; refusing to write there")
            path.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            store = cls(path, conn)
            if create:
                conn.executescript(SCHEMA)  # idempotent: CREATE TABLE IF NOT EXISTS
                with store.transaction():
                    conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            store._check()
            return store
        except sqlite3.OperationalError as exc:
            raise AtlasError(f"cannot open or write the atlas database {db}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise AtlasError(f"{db} is corrupt or not an atlas database: {exc}") from None

    def _check(self) -> None:
        try:
            version = self.get("schema_version")
            ok = self.conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise AtlasError(f"{self.directory} holds a corrupt atlas database: {exc}") from None
        if ok != "ok":
            raise AtlasError(f"{self.directory} holds a corrupt atlas database: {ok}")
        if version is None:
            raise AtlasError(f"{self.directory / DB_NAME} is not an atlas database (no schema version)")
        if int(version) not in READABLE_VERSIONS:
            raise AtlasError(f"atlas schema version {version} is not supported (this neurodbg reads "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
        if int(version) != SCHEMA_VERSION:   # older atlases only lack tables: add them
            self.conn.executescript(SCHEMA)
            with self.transaction() as conn:
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- meta -------------------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.conn.execute("SELECT key, value FROM meta ORDER BY key"):
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
        return out

    def set_meta(self, conn: sqlite3.Connection, **values: Any) -> None:
        for key, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value)
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, text))

    def claim(self, identity: dict[str, str], extra: dict[str, Any]) -> None:
        """Bind an empty atlas to a (model, corpus, settings) identity, or check that an
        existing one has the same; a mismatch is refused and nothing is written."""
        current = {k: self.get(k) for k in IDENTITY_KEYS}
        if all(v is None for v in current.values()):
            with self.transaction() as conn:
                self.set_meta(conn, **identity, **extra, status="scanning")
            return
        for key in IDENTITY_KEYS:
            if current[key] != identity[key]:
                what = key.replace("_fingerprint", "")
                name = self.get(f"{what}_name") or "?"
                raise AtlasMismatchError(
                    f"atlas {self.directory} was made with a different {what} ({name}, {str(current[key])[:12]}); "
                    f"refusing to mix it with this one ({str(identity[key])[:12]}). Use another --atlas directory")

    @property
    def status(self) -> str | None:
        return self.get("status")
