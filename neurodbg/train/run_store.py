"""A training run on disk: a directory holding one SQLite database (WAL) that the
watcher appends to in flushes (one transaction each), and `breaks/` with the
snapshots breakpoints save. Readers open it while training goes on; a killed
training loses at most its last unflushed interval.

Tables (long format, one row per figure, so any model's shape fits):
  meta     key/value: kind, schema version, model, sites, settings, status
  steps    one row per recorded step: step, wall time
  scalars  (step, key, value): loss, val_loss, val_acc, lr/0, grad_norm, ...
  params   (step, name, grad_norm, weight_norm, update_ratio) per parameter tensor
  sites    (step, site, mean, std, dead, saturated, nonfinite, units) per watched site
  breaks   (step, reason, module, detail, directory) for each breakpoint hit
  routers  (step, router, experts, top_k, tokens, counts, probs, entropy) per MoE router: the
           routed slots and summed probabilities per expert (JSON lists), the summed entropy

Schema 2 added `routers`; a schema-1 run gains the table when it is opened to write."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neurodbg.errors import RunError
from neurodbg.sqlite_store import SqliteStore, connect

DB_NAME = "run.db"
KIND = "neurodbg-run"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
ROUTERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS routers (step INTEGER NOT NULL, router TEXT NOT NULL, experts INTEGER NOT NULL,
                                    top_k INTEGER NOT NULL, tokens INTEGER NOT NULL, counts TEXT NOT NULL,
                                    probs TEXT NOT NULL, entropy REAL, PRIMARY KEY (step, router));
"""
SCHEMA = ROUTERS_SCHEMA + """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (step INTEGER PRIMARY KEY, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS scalars (step INTEGER NOT NULL, key TEXT NOT NULL, value REAL,
                                    PRIMARY KEY (step, key));
CREATE TABLE IF NOT EXISTS params (step INTEGER NOT NULL, name TEXT NOT NULL, grad_norm REAL, weight_norm REAL,
                                   update_ratio REAL, PRIMARY KEY (step, name));
CREATE TABLE IF NOT EXISTS sites (step INTEGER NOT NULL, site TEXT NOT NULL, mean REAL, std REAL, dead REAL,
                                  saturated REAL, nonfinite INTEGER NOT NULL, units INTEGER NOT NULL,
                                  PRIMARY KEY (step, site));
CREATE TABLE IF NOT EXISTS breaks (step INTEGER PRIMARY KEY, reason TEXT NOT NULL, module TEXT, detail TEXT,
                                   directory TEXT);
"""

ScalarRow = tuple[int, str, float | None]
ParamRow = tuple[int, str, float | None, float | None, float | None]
SiteRow = tuple[int, str, float | None, float | None, float | None, float | None, int, int]
RouterRow = tuple[int, str, int, int, int, str, str, float | None]


class RunStore(SqliteStore):

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path, *, create: bool = False) -> RunStore:
        path = Path(directory).expanduser()
        db = path / DB_NAME
        if path.exists() and not path.is_dir():
            raise RunError(f"{path} is a file, not a run directory")
        if not db.is_file():
            if not create:
                if not path.exists():
                    raise RunError(f"no run at {path}: the directory does not exist")
                raise RunError(f"{path} is not a neurodbg run (no {DB_NAME})")
            if path.is_dir() and any(p.name not in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm")
                                     for p in path.iterdir()):
                raise RunError(f"{path} is a non-empty directory that is not a neurodbg run; refusing to write there")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RunError(f"cannot create the run directory {path}: {exc.strerror or exc}") from None
        try:
            conn = connect(db)
            store = cls(path, conn)
            if create:
                conn.executescript(SCHEMA)
                with store.transaction():
                    conn.execute("INSERT OR IGNORE INTO meta VALUES ('kind', ?)", (KIND,))
                    conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            store._check()
            if create and store.get("schema_version") != str(SCHEMA_VERSION):
                conn.executescript(ROUTERS_SCHEMA)        # the only change since schema 1
                with store.transaction():
                    store.put_meta(conn, schema_version=str(SCHEMA_VERSION))
            return store
        except sqlite3.OperationalError as exc:
            raise RunError(f"cannot open or write the run database {db}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise RunError(f"{db} is corrupt or not a run database: {exc}") from None

    def _check(self) -> None:
        try:
            ok = self.conn.execute("PRAGMA quick_check").fetchone()[0]
            if self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() \
                    is None:
                raise RunError(f"{self.directory / DB_NAME} belongs to another program (not a neurodbg run)")
            kind = self.get("kind")
            version = self.get("schema_version")
        except sqlite3.DatabaseError as exc:
            raise RunError(f"{self.directory} holds a corrupt run database: {exc}") from None
        if ok != "ok":
            raise RunError(f"{self.directory} holds a corrupt run database: {ok}")
        if kind != KIND:
            raise RunError(f"{self.directory / DB_NAME} belongs to another program (not a neurodbg run)")
        if version is None or not version.isdigit() or int(version) not in READABLE_VERSIONS:
            raise RunError(f"run schema version {version} is not supported (this neurodbg reads "
                           f"{', '.join(map(str, READABLE_VERSIONS))})")

    def set_meta(self, **values: Any) -> None:
        with self.transaction() as conn:
            self.put_meta(conn, **values)

    # -- writing ----------------------------------------------------------------------------
    def append(self, steps: Sequence[tuple[int, float]], scalars: Sequence[ScalarRow], params: Sequence[ParamRow],
               sites: Sequence[SiteRow], routers: Sequence[RouterRow] = (), meta: dict[str, Any] | None = None
               ) -> None:
        """One flush: every row of the interval in one transaction (all or nothing)."""
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO steps VALUES (?, ?)", steps)
            conn.executemany("INSERT OR REPLACE INTO scalars VALUES (?, ?, ?)", scalars)
            conn.executemany("INSERT OR REPLACE INTO params VALUES (?, ?, ?, ?, ?)", params)
            conn.executemany("INSERT OR REPLACE INTO sites VALUES (?, ?, ?, ?, ?, ?, ?, ?)", sites)
            if routers:
                conn.executemany("INSERT OR REPLACE INTO routers VALUES (?, ?, ?, ?, ?, ?, ?, ?)", routers)
            self.put_meta(conn, **(meta or {}), last_flush=time.time())

    def add_break(self, step: int, reason: str, module: str | None, detail: str, directory: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO breaks VALUES (?, ?, ?, ?, ?)",
                         (step, reason, module, detail, directory))

    # -- reading ----------------------------------------------------------------------------
    def last_step(self) -> int | None:
        row = self.conn.execute("SELECT MAX(step) FROM steps").fetchone()
        return None if row[0] is None else int(row[0])

    def scalars(self) -> dict[str, list[tuple[int, float | None]]]:
        """key -> [(step, value)] in step order."""
        out: dict[str, list[tuple[int, float | None]]] = {}
        for step, key, value in self.conn.execute("SELECT step, key, value FROM scalars ORDER BY key, step"):
            out.setdefault(str(key), []).append((int(step), value))
        return out

    def params(self) -> list[tuple[int, str, float | None, float | None, float | None]]:
        return [(int(r[0]), str(r[1]), r[2], r[3], r[4]) for r in
                self.conn.execute("SELECT step, name, grad_norm, weight_norm, update_ratio FROM params "
                                  "ORDER BY step, rowid")]

    def sites(self) -> list[tuple[int, str, float | None, float | None, float | None, float | None, int, int]]:
        return [(int(r[0]), str(r[1]), r[2], r[3], r[4], r[5], int(r[6]), int(r[7])) for r in
                self.conn.execute("SELECT step, site, mean, std, dead, saturated, nonfinite, units FROM sites "
                                  "ORDER BY step, rowid")]

    def routers(self) -> list[RouterRow]:
        """Router rows in step order; none in a schema-1 run that was only read since."""
        if self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'routers'").fetchone() \
                is None:
            return []
        return [(int(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), str(r[5]), str(r[6]), r[7]) for r in
                self.conn.execute("SELECT step, router, experts, top_k, tokens, counts, probs, entropy FROM routers "
                                  "ORDER BY step, rowid")]

    def steps(self) -> list[tuple[int, float]]:
        return [(int(s), float(t)) for s, t in self.conn.execute("SELECT step, time FROM steps ORDER BY step")]

    def breaks(self) -> list[dict[str, Any]]:
        return [{"step": int(r[0]), "reason": r[1], "module": r[2], "detail": r[3], "directory": r[4]}
                for r in self.conn.execute("SELECT step, reason, module, detail, directory FROM breaks ORDER BY step")]
