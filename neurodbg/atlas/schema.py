"""The atlas database schema (SQLite, WAL). Bump SCHEMA_VERSION on any change."""

SCHEMA_VERSION = 1
DB_NAME = "atlas.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS neurons (
    layer        INTEGER NOT NULL,
    neuron       INTEGER NOT NULL,
    site         TEXT NOT NULL,
    n_tokens     INTEGER NOT NULL,
    mean         REAL NOT NULL,
    std          REAL NOT NULL,
    frac_active  REAL NOT NULL,
    max_value    REAL,
    min_value    REAL,
    quantiles    TEXT NOT NULL,     -- JSON {"+0.001": v, "-0.001": v, ...}; null where unavailable
    hist         BLOB NOT NULL,     -- int32 counts over the shared edges in meta.hist_edges
    promoted     TEXT,              -- JSON [[token_id, logit], ...]
    suppressed   TEXT,
    PRIMARY KEY (layer, neuron)
);
CREATE TABLE IF NOT EXISTS exemplars (
    layer     INTEGER NOT NULL,
    neuron    INTEGER NOT NULL,
    kind      TEXT NOT NULL,        -- '+' top by max, '-' bottom by min, 'r' random
    rank      INTEGER NOT NULL,
    seq_index INTEGER NOT NULL,
    value     REAL NOT NULL,        -- the sequence's max ('+'), min ('-') or max ('r')
    acts      BLOB NOT NULL,        -- float16 per-token activations of this neuron
    PRIMARY KEY (layer, neuron, kind, rank)
);
CREATE TABLE IF NOT EXISTS sequences (
    seq_index INTEGER PRIMARY KEY,
    ids       BLOB NOT NULL         -- int32 token ids
);
"""
