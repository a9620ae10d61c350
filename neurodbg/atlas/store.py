"""The atlas store: one SQLite database (WAL) in the atlas directory.

It holds the schema version, the model, corpus and settings fingerprints, and
the per-neuron records. Opening checks that the directory really is an atlas
and that the database is intact; a scan with another model, corpus or settings
is refused before anything is written."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neurodbg.atlas.schema import DB_NAME, READABLE_VERSIONS, SCHEMA, SCHEMA_VERSION
from neurodbg.errors import AtlasError, AtlasMismatchError
from neurodbg.sqlite_store import SqliteStore, connect

IDENTITY_KEYS = ("model_fingerprint", "corpus_fingerprint", "settings_fingerprint")


class AtlasStore(SqliteStore):

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
            conn = connect(db)
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
        if int(version) != SCHEMA_VERSION:
            self._upgrade(int(version))

    def _upgrade(self, version: int) -> None:
        """Bring an older atlas to this schema in one transaction; nothing it holds is dropped."""
        self.conn.executescript(SCHEMA)          # tables added since (CREATE TABLE IF NOT EXISTS)
        with self.transaction() as conn:
            legacy = self.get("corpus_fingerprint")
            if version < 3 and legacy is not None:
                conn.execute("DELETE FROM meta WHERE key = 'corpus_fingerprint'")
                self.set_meta(conn, legacy_corpus_fingerprint=legacy)
            earliest = min(version, int(self.get("upgraded_from") or version))   # what the identity rules read
            self.set_meta(conn, schema_version=str(SCHEMA_VERSION), upgraded_from=str(earliest))

    def set_meta(self, conn: sqlite3.Connection, **values: Any) -> None:
        self.put_meta(conn, **values)

    def claim(self, identity: dict[str, str], extra: dict[str, Any],
              legacy_corpus: Callable[[], str] | None = None) -> None:
        """Bind an empty atlas to a (model, corpus, settings) identity, or check that an
        existing one has the same; a mismatch is refused and nothing is written.
        `legacy_corpus` computes the corpus identity schema 2 recorded: an upgraded atlas
        that still carries one is checked against it and, when it matches, rebound to
        the full identity."""
        current = {k: self.get(k) for k in IDENTITY_KEYS}
        legacy = self.get("legacy_corpus_fingerprint")
        if all(v is None for v in current.values()) and legacy is None:
            with self.transaction() as conn:
                self.set_meta(conn, **identity, **extra, status="scanning")
            return
        if current["corpus_fingerprint"] is None and legacy is not None:
            if legacy_corpus is not None and legacy_corpus() == legacy:
                current["corpus_fingerprint"] = identity["corpus_fingerprint"]   # confirmed below, with the rest
            else:
                current["corpus_fingerprint"] = legacy
        for key in IDENTITY_KEYS:
            if current[key] != identity[key]:
                what = key.replace("_fingerprint", "")
                name = self.get(f"{what}_name") or "?"
                raise AtlasMismatchError(
                    f"atlas {self.directory} was made with a different {what} ({name}, {str(current[key])[:12]}); "
                    f"refusing to mix it with this one ({str(identity[key])[:12]}). Use another --atlas directory")
        if legacy is not None and self.get("corpus_fingerprint") is None:
            with self.transaction() as conn:
                self.set_meta(conn, corpus_fingerprint=identity["corpus_fingerprint"])
                conn.execute("DELETE FROM meta WHERE key = 'legacy_corpus_fingerprint'")

    @property
    def upgraded_identity(self) -> bool:
        """Whether this atlas was scanned under the schema-2 corpus identity (its checkpoints carry it)."""
        return int(self.get("upgraded_from") or SCHEMA_VERSION) < 3

    @property
    def status(self) -> str | None:
        return self.get("status")
