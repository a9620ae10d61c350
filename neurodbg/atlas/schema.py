"""The atlas database schema (SQLite, WAL). Bump SCHEMA_VERSION on any change."""

SCHEMA_VERSION = 5
# Older versions are upgraded on open (see AtlasStore._upgrade): version 1 lacks the description
# tables; versions 1 and 2 recorded a weaker corpus identity (corpus content, tokenizer vocabulary,
# seq_len, BOS setting, dedup), kept as `legacy_corpus_fingerprint` until a scan of the same corpus
# confirms it and records the full `corpus_settings_fingerprint` in its place. Version 4 adds
# the `images` table of image atlases (a text atlas leaves it empty). Version 5 adds
# `description_scores` (detection, fuzzing and shuffled-description baselines).
READABLE_VERSIONS = (1, 2, 3, 4, 5)
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
CREATE TABLE IF NOT EXISTS images (      -- an image atlas's exemplar images, as the model saw them
    seq_index INTEGER PRIMARY KEY,  -- the image's index in the corpus
    name      TEXT NOT NULL,        -- file name within the corpus folder, or corpus[index]
    label     INTEGER NOT NULL,     -- the corpus's label index, -1 when the corpus has none
    predicted INTEGER NOT NULL,     -- the model's top class, -1 when it has no class names
    data      BLOB NOT NULL         -- PNG (JPEG beyond 64 px) of the model's input, denormalised
);
CREATE TABLE IF NOT EXISTS descriptions (
    layer      INTEGER NOT NULL,
    neuron     INTEGER NOT NULL,
    polarity   TEXT NOT NULL,       -- '+' what drives it up, '-' what drives it down
    explainer  TEXT NOT NULL,       -- e.g. 'stat', 'local:default', 'openai:gpt-4o-mini'
    candidate  INTEGER NOT NULL,    -- several candidates may be drawn per explainer
    text       TEXT NOT NULL,
    spec       BLOB,                -- machine-readable form: zlib-compressed JSON (JSON text before schema 5)
    score      REAL,                -- Pearson r of simulated vs true activations on held-out exemplars
    simulator  TEXT,
    embedding  BLOB,                -- float32, unit norm (search index)
    PRIMARY KEY (layer, neuron, polarity, explainer, candidate)
);
CREATE TABLE IF NOT EXISTS description_scores (   -- every score of a description, with its baseline
    layer      INTEGER NOT NULL,
    neuron     INTEGER NOT NULL,
    polarity   TEXT NOT NULL,
    explainer  TEXT NOT NULL,
    candidate  INTEGER NOT NULL,
    scores     TEXT NOT NULL,       -- JSON {"simulation": r, "detection": {"auroc", "balanced_accuracy"},
                                    --  "fuzzing": {...}, "shuffled": {the same with another neuron's description}}
    PRIMARY KEY (layer, neuron, polarity, explainer, candidate)
);
CREATE TABLE IF NOT EXISTS described (   -- (neuron, polarity, explainer) done, even when nothing was found
    layer      INTEGER NOT NULL,
    neuron     INTEGER NOT NULL,
    polarity   TEXT NOT NULL,
    explainer  TEXT NOT NULL,
    PRIMARY KEY (layer, neuron, polarity, explainer)
);
"""
