"""Fingerprints: sha256 digests that say whether two corpora (and two sequence
streams) are the same, on any machine.

A file's identity is the sha256 of its bytes, read in a stream. Hashing a large
corpus takes a while, so digests of files of 1 MiB or more are remembered in
`$NEURODBG_HOME/corpora/.fingerprints.json`, keyed by (absolute path, size,
mtime in ns, inode) — the key only finds the cached digest; it is never the
identity itself, so a copy of the corpus on another machine gets the same
fingerprint."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from neurodbg import paths
from neurodbg.corpus.chunking import CHUNKING_VERSION, resolve_specials
from neurodbg.corpus.source import CorpusSource
from neurodbg.errors import CorpusError
from neurodbg.progress import byte_progress

CHUNK = 1 << 20
CACHE_MIN_BYTES = 1 << 20  # smaller files are hashed again each time (under a millisecond)
CACHE_MAX_ENTRIES = 10_000
PROGRESS_MIN_BYTES = 256 << 20
CACHE_FILE = ".fingerprints.json"


def digest_of(obj: Any) -> str:
    """sha256 hex of a JSON-serialisable value (keys sorted, so order-independent for dicts)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, streamed, cached for large files."""
    try:
        st = path.stat()
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path}: {exc.strerror or exc}") from None
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    cacheable = st.st_size >= CACHE_MIN_BYTES
    if cacheable:
        hit = _load_cache().get(key)
        if isinstance(hit, str):
            return hit
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f, byte_progress(f"hashing {path.name}", st.st_size,
                                                  enabled=st.st_size >= PROGRESS_MIN_BYTES) as advance:
            while block := f.read(CHUNK):
                h.update(block)
                advance(len(block))
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path}: {exc.strerror or exc}") from None
    digest = h.hexdigest()
    if cacheable:
        _store(key, digest)
    return digest


def _cache_path() -> Path:
    return paths.home() / "corpora" / CACHE_FILE


def _load_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(key: str, digest: str) -> None:
    """Best effort: a read-only home or a concurrent writer only costs a re-hash later."""
    cache = _load_cache()
    cache[key] = digest
    if len(cache) > CACHE_MAX_ENTRIES:  # drop the oldest entries (dicts keep insertion order)
        cache = dict(list(cache.items())[-CACHE_MAX_ENTRIES:])
    target = _cache_path()
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".fingerprints-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f)
        os.replace(tmp, target)
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what decides a tokenizer's output: its full serialised definition
    (fast tokenizers) or its vocabulary (slow ones), plus its special-token ids."""
    specials = {k: getattr(tokenizer, k, None) for k in ("bos_token_id", "eos_token_id", "sep_token_id")}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        body = hashlib.sha256(backend.to_str().encode()).hexdigest()
    elif hasattr(tokenizer, "get_vocab"):
        body = digest_of(sorted(tokenizer.get_vocab().items()))
    else:
        body = type(tokenizer).__qualname__
    return digest_of({"tokenizer": body, "specials": specials})


def corpus_settings_fingerprint(source: CorpusSource, tokenizer: Any, seq_len: int = 64, bos: bool | None = None,
                                dedup: bool = True) -> str:
    """sha256 over everything that changes the sequence stream: the corpus content
    and reading settings, the tokenizer, seq_len, BOS, separator, dedup and the
    chunking rules' version. `tokenizer` is the tokenizer object (BOS=None is then
    resolved to what it means for it) or a string naming/hashing it (BOS=None is
    then hashed as "auto")."""
    bos_setting: str | bool | int | None
    sep: int | None
    if isinstance(tokenizer, str):
        tok, bos_setting, sep = tokenizer, ("auto" if bos is None else bos), None
    else:
        specials = resolve_specials(tokenizer, bos)
        tok, bos_setting, sep = tokenizer_fingerprint(tokenizer), specials.bos, specials.sep
    return digest_of({"chunking": CHUNKING_VERSION, "corpus": source.fingerprint(), "tokenizer": tok,
                      "seq_len": seq_len, "bos": bos_setting, "sep": sep, "dedup": dedup})
