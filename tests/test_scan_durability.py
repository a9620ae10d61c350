"""Durability of scans through the real CLI: SIGKILL at several points and
rerun gives the same atlas as an uninterrupted scan; a full disk stops the
scan cleanly at its last good checkpoint; bad input is one line and exit 2."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scan_fixtures import save_tiny, write_corpus

from neurodbg.atlas.schema import SCHEMA_VERSION

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))
SCAN_ARGS = ["--seq-len", "16", "--batch-size", "4", "--top-k", "5", "--random-k", "3"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory, default_model):
    tmp = tmp_path_factory.mktemp("durable")
    model_dir = save_tiny(default_model.tokenizer, tmp / "tiny-llama")
    corpus = write_corpus(tmp / "corpus.jsonl")
    reference = tmp / "reference"
    done = _scan(model_dir, corpus, reference)
    assert done.returncode == 0, done.stderr
    return tmp, model_dir, corpus, _export(reference)


def _cmd(model_dir: Path, corpus: Path, atlas: Path, *extra: str) -> list[str]:
    return [NEURODBG, "scan", "--model", str(model_dir), "--corpus", str(corpus), "--atlas", str(atlas),
            *SCAN_ARGS, "--json", *extra]


def _scan(model_dir: Path, corpus: Path, atlas: Path, *extra: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(model_dir, corpus, atlas, *extra), capture_output=True, text=True, timeout=600, **kw)


def _export(atlas: Path) -> dict:
    out = subprocess.run([NEURODBG, "atlas", "export", "--json", "--atlas", str(atlas)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    data["meta"].pop("scan_seconds", None)
    return data


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_sigkill_at_several_points_then_resume(parts) -> None:
    tmp, model_dir, corpus, reference = parts
    atlas = tmp / "killed"
    checkpoint = atlas / "checkpoint.pt"
    kills = 0
    for delay in (0.0, 1.5, 3.0):
        proc = subprocess.Popen(_cmd(model_dir, corpus, atlas, "--checkpoint-every", "0"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if checkpoint.exists() and checkpoint.stat().st_mtime_ns != before:
                break  # it has made progress since the last kill
            time.sleep(0.05)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2
    done = _scan(model_dir, corpus, atlas)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "complete"
    assert _export(atlas) == reference
    assert not checkpoint.exists()


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_stops_cleanly_and_resumes(parts) -> None:
    tmp, model_dir, corpus, reference = parts
    atlas = tmp / "full-disk"
    result = _scan(model_dir, corpus, atlas, preexec_fn=_limit_file_size(150_000))
    line = _one_error_line(result)
    assert "could not write" in line
    assert not list(atlas.glob(".checkpoint*"))      # no half-written checkpoint left behind
    done = _scan(model_dir, corpus, atlas)
    assert done.returncode == 0, done.stderr
    assert _export(atlas) == reference


def test_mismatch_is_refused_and_nothing_changes(parts) -> None:
    tmp, model_dir, corpus, _ = parts
    atlas = tmp / "reference"
    before = (atlas / "atlas.db").read_bytes()
    result = subprocess.run([NEURODBG, "scan", "--model", str(model_dir), "--corpus", str(corpus), "--atlas",
                             str(atlas), "--seq-len", "16", "--batch-size", "4", "--top-k", "6"],
                            capture_output=True, text=True, timeout=300)
    assert "different settings" in _one_error_line(result)
    assert (atlas / "atlas.db").read_bytes() == before
    wrong_model = subprocess.run([NEURODBG, "scan", "--corpus", str(corpus), "--atlas", str(atlas), *SCAN_ARGS],
                                 capture_output=True, text=True, timeout=300)
    assert "different model" in _one_error_line(wrong_model)


def test_atlas_commands(parts) -> None:
    tmp, _, _, reference = parts
    info = subprocess.run([NEURODBG, "atlas", "info", "--atlas", str(tmp / "reference"), "--json"],
                          capture_output=True, text=True, timeout=120)
    data = json.loads(info.stdout)
    assert data["status"] == "complete" and data["neurons"] == 96 and data["schema_version"] == SCHEMA_VERSION
    one = subprocess.run([NEURODBG, "atlas", "neuron", "L1/N5", "--atlas", str(tmp / "reference"), "--json"],
                         capture_output=True, text=True, timeout=120)
    rec = json.loads(one.stdout)
    exported = next(n for n in reference["neurons"] if n["id"] == "L1/N5")      # the export's record of it
    for key in ("site", "n_tokens", "mean", "std", "frac_active", "max_value", "min_value", "quantiles", "hist"):
        assert rec[key] == exported[key], key
    assert rec["promoted"] == [[p["id"], p["logit"]] for p in exported["promoted"]]
    for kind, name in (("+", "top"), ("-", "bottom"), ("r", "random")):
        assert [(e["rank"], e["seq_index"], e["value"], e["token_ids"]) for e in rec["exemplars"][kind]] == \
               [(e["rank"], e["seq_index"], e["value"], e["token_ids"]) for e in exported["exemplars"][name]]
    bad = subprocess.run([NEURODBG, "atlas", "neuron", "L9/N5", "--atlas", str(tmp / "reference")],
                         capture_output=True, text=True, timeout=120)
    assert "no neuron L9/N5" in _one_error_line(bad)


@pytest.mark.parametrize("case", ["missing-corpus", "empty-corpus", "no-field", "not-an-atlas", "corrupt-db",
                                  "truncated-db", "bad-neuron-id"])
def test_bad_input(parts, case: str) -> None:
    tmp, model_dir, corpus, _ = parts
    work = tmp / f"bad-{case}"
    work.mkdir()
    if case == "missing-corpus":
        result = _scan(model_dir, work / "absent.jsonl", work / "atlas")
    elif case == "empty-corpus":
        (work / "empty.jsonl").write_text("")
        result = _scan(model_dir, work / "empty.jsonl", work / "atlas")
    elif case == "no-field":
        result = _scan(model_dir, corpus, work / "atlas", "--text-field", "body")
    elif case == "not-an-atlas":
        result = subprocess.run([NEURODBG, "atlas", "info", "--atlas", str(work)], capture_output=True, text=True)
    elif case in ("corrupt-db", "truncated-db"):
        atlas = work / "atlas"
        atlas.mkdir()
        source = (tmp / "reference" / "atlas.db").read_bytes()
        (atlas / "atlas.db").write_bytes(os.urandom(8192) if case == "corrupt-db" else source[: len(source) // 3])
        result = subprocess.run([NEURODBG, "atlas", "info", "--atlas", str(atlas)], capture_output=True, text=True)
    else:
        result = subprocess.run([NEURODBG, "atlas", "neuron", "5/123", "--atlas", str(tmp / "reference")],
                                capture_output=True, text=True)
    line = _one_error_line(result)
    assert len(line) < 400


def test_database_is_wal_and_compact(parts) -> None:
    tmp, _, _, _ = parts
    conn = sqlite3.connect(tmp / "reference" / "atlas.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
