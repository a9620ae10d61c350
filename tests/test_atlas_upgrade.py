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
    for table in ("exemplars", "sequences"):
        assert a[table] == b[table], table
    store_a, store_b = AtlasStore.open(partial), AtlasStore.open(tmp_path / "fresh")
    for layer, neuron in ((0, 0), (1, 23)):
        ra, rb = records.neuron(store_a, layer, neuron), records.neuron(store_b, layer, neuron)
        assert ra.quantiles == rb.quantiles and ra.hist == rb.hist and ra.exemplars == rb.exemplars
        assert ra.mean == pytest.approx(rb.mean, rel=1e-12) and ra.std == pytest.approx(rb.std, rel=1e-12)
    assert store_a.get("corpus_fingerprint") == store_b.get("corpus_fingerprint")
