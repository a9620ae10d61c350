"""The streaming atlas export on a real atlas of the default model (two layers, every
neuron described): each record equals what the atlas's own readers return, JSON
Lines, the JSON document and Parquet carry the same records, layers and fields can
be chosen, memory is that of one layer, and a failed write leaves nothing that
looks finished."""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from neurodbg.atlas import AtlasStore, descriptions, records
from neurodbg.atlas import export as export_lib
from neurodbg.atlas.export_json import write_json, write_json_lines
from neurodbg.atlas.export_parquet import write_parquet
from neurodbg.errors import ExportError

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))


def _cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run([NEURODBG, *args], capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore


def _one_line_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.stderr


@pytest.fixture(scope="module")
def store(described_atlas: Path):
    s = AtlasStore.open(described_atlas)
    yield s
    s.close()


@pytest.fixture(scope="module")
def lines(store: AtlasStore) -> list[dict]:
    out = io.StringIO()
    written = write_json_lines(store, out, export_lib.select(store))
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert written == len(rows) == records.neuron_count(store) == 2 * 1536
    return rows


def test_every_record_equals_the_atlas_readers(store: AtlasStore, lines: list[dict]) -> None:
    best = {(e.layer, e.neuron, e.polarity): e for e in descriptions.best(store)}
    sequences = dict(records.sequences(store))
    for row in [*lines[::97], lines[-1]]:
        rec = records.neuron(store, row["layer"], row["neuron"])
        assert row["id"] == rec.id and row["site"] == rec.site and row["n_tokens"] == rec.n_tokens
        for key in ("mean", "std", "frac_active", "max_value", "min_value", "quantiles", "hist"):
            assert row[key] == getattr(rec, key), key          # exact: JSON floats round-trip
        assert [[p["id"], p["logit"]] for p in row["promoted"]] == rec.promoted
        assert [[p["id"], p["logit"]] for p in row["suppressed"]] == rec.suppressed
        for kind, name in export_lib.KINDS.items():
            exported, stored = row["exemplars"][name], rec.exemplars.get(kind, [])
            assert [(e["rank"], e["seq_index"], e["value"]) for e in exported] == \
                   [(e.rank, e.seq_index, e.value) for e in stored]
            for e, s in zip(exported, stored, strict=True):
                # each activation is the shortest decimal that reads back to the stored float16
                assert np.array_equal(np.array(e["acts"], dtype=np.float16), np.array(s.acts, dtype=np.float16))
                assert e["token_ids"] == sequences[s.seq_index].tolist()
        for polarity in "+-":
            d = best.get((row["layer"], row["neuron"], polarity))
            assert row["descriptions"][polarity] == (None if d is None else
                                                     {"text": d.text, "score": d.score, "explainer": d.explainer})


def test_parquet_and_the_json_document_carry_the_same_records(store: AtlasStore, lines: list[dict],
                                                             tmp_path: Path) -> None:
    selection = export_lib.select(store)
    path = tmp_path / "atlas.parquet"
    assert write_parquet(store, path, selection, rows_per_group=500) == len(lines)
    table = pq.read_table(path)
    assert table.num_rows == len(lines)
    for row, want in zip(table.slice(0, 40).to_pylist() + table.slice(len(lines) - 3).to_pylist(),
                         lines[:40] + lines[-3:], strict=True):
        assert _without_acts(row) == _without_acts(want)
        for kind in export_lib.KINDS.values():      # float32 in Parquet, shortest decimals in JSON
            for got, exp in zip(row["exemplars"][kind], want["exemplars"][kind], strict=True):
                assert np.array_equal(np.array(got["acts"], np.float16), np.array(exp["acts"], np.float16))
    document = io.StringIO()
    write_json(store, document, selection)
    whole = json.loads(document.getvalue())
    assert whole["meta"]["schema_version"] == 5
    assert whole["neurons"] == lines


def _without_acts(record: dict) -> dict:
    out = dict(record)
    out["exemplars"] = {k: [{f: v for f, v in e.items() if f != "acts"} for e in entries]
                        for k, entries in record["exemplars"].items()}
    return out


def test_layers_and_fields_are_chosen(store: AtlasStore, lines: list[dict]) -> None:
    out = io.StringIO()
    write_json_lines(store, out, export_lib.select(store, [1], ["stats", "descriptions"]))
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 1536 and {r["layer"] for r in rows} == {1}
    keep = {"id", "layer", "neuron", *export_lib.STATS, "descriptions"}
    assert set(rows[0]) == keep
    assert rows == [{k: v for k, v in full.items() if k in keep} for full in lines[1536:]]
    with pytest.raises(ExportError, match="layer 7 is not in this atlas"):
        export_lib.select(store, [0, 7])
    with pytest.raises(ExportError, match="unknown export field 'colour'"):
        export_lib.select(store, None, ["stats", "colour"])
    with pytest.raises(ExportError, match="tokenizer"):
        export_lib.select(store, None, ["exemplars", "tokens"])


def test_tokens_field_decodes_every_exemplar_token(store: AtlasStore, default_model) -> None:
    tok = default_model.tokenizer
    vocab = tok.batch_decode([[i] for i in range(len(tok))])
    selection = export_lib.select(store, [0], ["exemplars", "output_tokens", "tokens"], vocab=vocab)
    out = io.StringIO()
    write_json_lines(store, out, selection, vocab=vocab)
    first = json.loads(out.getvalue().splitlines()[5])
    entry = first["exemplars"]["top"][0]
    assert entry["tokens"] == [tok.decode([t]) for t in entry["token_ids"]]
    assert first["promoted"][0]["token"] == tok.decode([first["promoted"][0]["id"]])
    record = next(iter(export_lib.iter_records(store, selection, vocab=vocab)))   # the same record as a dict
    line = json.loads(out.getvalue().splitlines()[0])
    assert _without_acts(record) == _without_acts(line)
    assert np.array_equal(np.array(record["exemplars"]["top"][0]["acts"], np.float16),
                          np.array(line["exemplars"]["top"][0]["acts"], np.float16))


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> AtlasStore:
    """A synthetic complete atlas of 4 layers x 200 neurons (16 exemplars of 64 tokens each),
    written through the atlas's own writer: many layers, each small, so a streaming export's
    memory can be compared across layer counts quickly."""
    from neurodbg.atlas.writer import rewrite

    rng = np.random.default_rng(0)
    store = AtlasStore.open(tmp_path_factory.mktemp("wide") / "atlas", create=True)
    seqs = [(i, rng.integers(0, 49152, 64, dtype=np.int32).tobytes()) for i in range(400)]
    with rewrite(store) as out:
        out.sequences(seqs)
        for layer in range(4):
            out.neurons([(layer, n, f"layers.{layer}.mlp.act", 1000, 0.0, 1.0, 0.5, 3.0, -3.0,
                          json.dumps({"+0.001": 2.5, "-0.001": -2.5}), np.zeros(128, np.int32).tobytes(), None, None)
                         for n in range(200)])
            out.exemplars([(layer, n, "+", r, int(rng.integers(0, 400)), 1.0,
                            rng.standard_normal(64).astype(np.float16).tobytes())
                           for n in range(200) for r in range(16)])
        out.meta(status="complete")
    return store


def test_memory_is_that_of_one_layer(wide: AtlasStore) -> None:
    """Exporting four layers peaks no higher than exporting one: nothing accumulates across layers
    (the export that built the whole atlas in memory first held ~4x the data)."""
    def peak(layers: list[int]) -> int:
        sink = open(os.devnull, "w")  # noqa: SIM115
        tracemalloc.start()
        try:
            write_json_lines(wide, sink, export_lib.select(wide, layers))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            sink.close()

    one, four = peak([0]), peak(list(range(4)))
    per_layer = 200 * 16 * 64 * 8          # a layer's activations as JSON text, at least
    assert four < one + per_layer / 2, (one, four)


def test_cli_streams_to_stdout_and_files(described_atlas: Path, lines: list[dict], tmp_path: Path) -> None:
    out = _cli("atlas", "export", "--atlas", str(described_atlas), "--layers", "1", "--fields", "stats")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in lines[1536:]] and rows[0]["mean"] == lines[1536]["mean"]
    target = tmp_path / "atlas.parquet"
    out = _cli("atlas", "export", "--atlas", str(described_atlas), "--parquet", str(target), "--layers", "0")
    assert out.returncode == 0, out.stderr
    assert "wrote 1,536 neurons" in out.stderr
    assert pq.read_table(target, columns=["id"]).column("id").to_pylist() == [r["id"] for r in lines[:1536]]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.parquet"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_cli_bad_export_requests(described_atlas: Path, tmp_path: Path) -> None:
    atlas = str(described_atlas)
    _one_line_error(_cli("atlas", "export", "--atlas", atlas, "--fields", "stats,colour"), "colour")
    _one_line_error(_cli("atlas", "export", "--atlas", atlas, "--layers", "0,9"), "layer 9")
    _one_line_error(_cli("atlas", "export", "--atlas", atlas, "--layers", "x-y"), "malformed layers")
    _one_line_error(_cli("atlas", "export", "--atlas", atlas, "--jsonl", "--parquet", str(tmp_path / "p")),
                    "choose one format")
    _one_line_error(_cli("atlas", "export", "--atlas", atlas, "--out", str(tmp_path / "no" / "such" / "dir.jsonl")),
                    "cannot write")
    _one_line_error(_cli("atlas", "export", "--atlas", str(tmp_path / "missing")), "no atlas")
    with open("/dev/full", "w") as full:       # stdout on a full disk
        result = subprocess.run([NEURODBG, "atlas", "export", "--atlas", atlas, "--layers", "0"], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=300)
    _one_line_error(result, "No space left")


def test_a_write_that_fails_midway_leaves_nothing(described_atlas: Path, tmp_path: Path) -> None:
    """A file-size limit makes the write fail partway, as a full disk would: exit 2, one line, and
    no file at the target or beside it; an earlier complete export there stays as it was."""
    target = tmp_path / "atlas.jsonl"
    target.write_text("the previous export\n")

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # then the write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))

    for args in (["--out", str(target)], ["--json", "--out", str(target)], ["--parquet", str(target)]):
        result = _cli("atlas", "export", "--atlas", str(described_atlas), *args, preexec_fn=limit)
        _one_line_error(result, "cannot write")
        assert target.read_text() == "the previous export\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.jsonl"]


def test_a_killed_export_leaves_no_file_that_looks_finished(described_atlas: Path, tmp_path: Path) -> None:
    target = tmp_path / "atlas.jsonl"
    child = subprocess.Popen([NEURODBG, "atlas", "export", "--atlas", str(described_atlas), "--out", str(target)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        start = time.monotonic()
        while not any(p.name.endswith(".partial") and p.stat().st_size > 0 for p in tmp_path.iterdir()):
            assert time.monotonic() - start < 120 and child.poll() is None
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not target.exists()       # only the hidden `.atlas.jsonl.*.partial` it was writing
