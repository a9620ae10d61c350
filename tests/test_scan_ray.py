"""The Ray backend on a real local Ray cluster (started here, on loopback):
a sharded scan merges into exactly the atlas a single process makes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from scan_fixtures import save_tiny, write_corpus

BIN = Path(sys.executable).parent
NEURODBG = str(BIN / "neurodbg")
ARGS = ["--seq-len", "16", "--batch-size", "4", "--top-k", "5", "--random-k", "3", "--json"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                            "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                            f"--temp-dir={temp}"], env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _export(atlas: Path) -> dict:
    out = subprocess.run([NEURODBG, "atlas", "export", "--json", "--atlas", str(atlas)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("scan_seconds", "backend"):
        data["meta"].pop(key, None)
    return data


def test_ray_scan_equals_single_process(cluster: str, tmp_path: Path, default_model) -> None:
    model_dir = save_tiny(default_model.tokenizer, tmp_path / "tiny-llama")
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    base = [NEURODBG, "scan", "--model", str(model_dir), "--corpus", str(corpus), *ARGS]
    local = subprocess.run([*base, "--atlas", str(tmp_path / "local")], capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr
    env = {**os.environ, "RAY_ADDRESS": cluster}
    distributed = subprocess.run([*base, "--atlas", str(tmp_path / "ray"), "--backend", "ray", "--workers", "3"],
                                 capture_output=True, text=True, timeout=900, env=env)
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    summary = json.loads(distributed.stdout)
    assert summary["status"] == "complete" and summary["neurons"] == 96
    ray_atlas, local_atlas = _export(tmp_path / "ray"), _export(tmp_path / "local")
    # moments are float sums added in another order: equal to rounding; everything else exactly
    for ours, theirs in zip(ray_atlas["neurons"], local_atlas["neurons"], strict=True):
        for key in ("mean", "std"):
            assert ours.pop(key) == pytest.approx(theirs.pop(key), rel=1e-9, abs=1e-12)
    assert ray_atlas == local_atlas
    assert not list((tmp_path / "ray").glob("shard-*"))
