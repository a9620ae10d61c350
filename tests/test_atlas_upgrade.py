"""Atlases written by the code before schema 3 (`tests/data/legacy_atlas`, made by
commit a110a2e) open with today's code: upgraded, nothing lost, their corpus
identity confirmed and rebound to `corpus_settings_fingerprint` by the next scan of
the same corpus, a scan with other chunking refused, and a mid-scan checkpoint
resumed, ending with the atlas a fresh scan makes."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from legacy_fixture import CORPUS, DATA, legacy_model, legacy_settings

from neurodbg.atlas import AtlasStore, descriptions, records
from neurodbg.atlas.schema import SCHEMA_VERSION
from neurodbg.corpus import corpus_settings_fingerprint, open_corpus
from neurodbg.errors import AtlasMismatchError
from neurodbg.scan import scan

TABLES = ("neurons", "exemplars", "sequences", "descriptions", "described")


def _digest(db: Path) -> dict[str, str]:
    """sha256 of every row of every data table (in sorted order), read with plain sqlite3."""
    conn = sqlite3.connect(db)
    try:
        out = {}
        for table in TABLES:
            h = hashlib.sha256()
            for text in sorted(repr(row) for row in conn.execute(f"SELECT * FROM {table}")):
                h.update(text.encode())
            out[table] = h.hexdigest()
        return out
    finally:
        conn.close()


def _meta(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT key, value FROM meta"))
    finally:
        conn.close()


@pytest.fixture(scope="module")
def model(default_model):
    return legacy_model(default_model.tokenizer)


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(DATA / name, target)
    return target


def test_a_schema_2_atlas_is_upgraded_with_nothing_lost(tmp_path: Path) -> None:
    atlas = _copy("complete", tmp_path)
    before, old_meta = _digest(atlas / "atlas.db"), _meta(atlas / "atlas.db")
    assert old_meta["schema_version"] == "2"
    store = AtlasStore.open(atlas)
    meta = store.meta()
    assert meta["schema_version"] == SCHEMA_VERSION == 5 and meta["upgraded_from"] == 2
    assert "corpus_fingerprint" not in meta
    assert store.get("legacy_corpus_fingerprint") == old_meta["corpus_fingerprint"]
    for key in ("model_fingerprint", "settings_fingerprint", "settings", "hist_edges", "status", "tokens"):
        assert store.get(key) == old_meta[key], key
    assert records.neuron_count(store) == 48
    assert len(list(descriptions.best(store))) == 96
    store.close()
    assert _digest(atlas / "atlas.db") == before
    upgraded = _meta(atlas / "atlas.db")
    AtlasStore.open(atlas).close()            # opening again changes nothing more
    assert _meta(atlas / "atlas.db") == upgraded


def test_the_next_scan_confirms_the_legacy_identity_and_rebinds_it(model, tmp_path: Path) -> None:
    atlas = _copy("complete", tmp_path)
    source = open_corpus(str(CORPUS))
    summary = scan(model, source, atlas, legacy_settings(), progress=False)
    assert summary.status == "complete" and summary.neurons == 48
    store = AtlasStore.open(atlas)
    assert store.get("corpus_fingerprint") == corpus_settings_fingerprint(source, model.tokenizer, 32)
    assert store.get("legacy_corpus_fingerprint") is None
    store.close()
    # another chunking of the same corpus is refused, against the full identity now
    with pytest.raises(AtlasMismatchError, match="different corpus"):
        scan(model, source, atlas, legacy_settings(bos=True), progress=False)


def test_a_change_of_chunking_rules_is_a_different_corpus(model, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What the schema-2 identity missed: new chunking rules (or separator, or tokenizer definition)
    make another sequence stream, so neither the atlas nor its checkpoint may be reused."""
    import neurodbg.corpus.fingerprint as fingerprint

    partial = _copy("partial", tmp_path)
    source = open_corpus(str(CORPUS))
    first = scan(model, source, partial, legacy_settings(), progress=False, stop_after_batches=1)
    assert first.status == "partial" and first.resumed_from == 8
    monkeypatch.setattr(fingerprint, "CHUNKING_VERSION", fingerprint.CHUNKING_VERSION + 1)
    with pytest.raises(AtlasMismatchError, match="different corpus"):
        scan(model, source, partial, legacy_settings(), progress=False)


def test_a_legacy_atlas_refuses_another_corpus_before_writing(model, tmp_path: Path) -> None:
    atlas = _copy("complete", tmp_path)
    other = tmp_path / "other.jsonl"
    other.write_text(CORPUS.read_text().replace("the", "a"))
    AtlasStore.open(atlas).close()            # upgraded
    before = _digest(atlas / "atlas.db")
    with pytest.raises(AtlasMismatchError, match="different corpus"):
        scan(model, open_corpus(str(other)), atlas, legacy_settings(), progress=False)
    assert _digest(atlas / "atlas.db") == before


def test_a_legacy_checkpoint_resumes_to_the_atlas_a_fresh_scan_makes(model, tmp_path: Path) -> None:
    partial = _copy("partial", tmp_path)
    source = open_corpus(str(CORPUS))
    resumed = scan(model, source, partial, legacy_settings(), progress=False)
    assert resumed.resumed_from == 8 and resumed.status == "complete"    # two batches of 4 were checkpointed
    fresh = scan(model, source, tmp_path / "fresh", legacy_settings(), progress=False)
    assert fresh.sequences == resumed.sequences
    a, b = _digest(partial / "atlas.db"), _digest(tmp_path / "fresh" / "atlas.db")
    assert a["sequences"] == b["sequences"]
    # the checkpoint's statistics came from the machine that made the fixture, whose float rounding may
    # differ from this one's in the last bits: the same exemplars (neuron, kind, rank, sequence), their
    # values equal up to that rounding (a resume on one machine is bit-exact: test_scan)
    ex_a, ex_b = _exemplars(partial), _exemplars(tmp_path / "fresh")
    assert ex_a.keys() == ex_b.keys()
    for key, (value, acts) in ex_a.items():
        assert value == pytest.approx(ex_b[key][0], rel=1e-5, abs=1e-6), key
        assert np.allclose(acts, ex_b[key][1], rtol=2e-3, atol=1e-3), key
    store_a, store_b = AtlasStore.open(partial), AtlasStore.open(tmp_path / "fresh")
    for layer, neuron in ((0, 0), (1, 23)):
        ra, rb = records.neuron(store_a, layer, neuron), records.neuron(store_b, layer, neuron)
        assert ra.quantiles == pytest.approx(rb.quantiles, rel=1e-4, abs=1e-5)
        assert sum(ra.hist) == sum(rb.hist) and sum(abs(x - y) for x, y in zip(ra.hist, rb.hist, strict=True)) <= 2
        assert {k: [(e.rank, e.seq_index) for e in v] for k, v in ra.exemplars.items()} == \
            {k: [(e.rank, e.seq_index) for e in v] for k, v in rb.exemplars.items()}
        assert ra.mean == pytest.approx(rb.mean, rel=1e-6) and ra.std == pytest.approx(rb.std, rel=1e-6)
    assert store_a.get("corpus_fingerprint") == store_b.get("corpus_fingerprint")


def _exemplars(atlas: Path) -> dict[tuple[object, ...], tuple[float, np.ndarray]]:
    """(layer, neuron, kind, rank, sequence) -> (value, per-token activations as float32)."""
    conn = sqlite3.connect(atlas / "atlas.db")
    try:
        return {(layer, neuron, kind, rank, seq): (value, np.frombuffer(acts, dtype=np.float16).astype(np.float32))
                for layer, neuron, kind, rank, seq, value, acts in conn.execute("SELECT * FROM exemplars")}
    finally:
        conn.close()
