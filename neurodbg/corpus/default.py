"""Built-in corpora: `pull` assembles one from its catalogue sources into
`$NEURODBG_HOME/corpora/NAME` as JSONL shards plus `manifest.json`.

The build is reproducible (sources in catalogue order, documents in each
source's fixed order, then one seeded shuffle that mixes them; no timestamps)
and atomic: it happens in a hidden staging directory renamed into place only
when complete, under the same exclusive file lock as model provisioning, and
leftovers of a killed build are removed by the next one."""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from pathlib import Path
from typing import Any

from neurodbg import paths
from neurodbg.corpus.builders import BUILDERS, Document
from neurodbg.corpus.catalogue import CorpusEntry, entries, lookup
from neurodbg.corpus.files import FilesSource
from neurodbg.errors import CorpusError
from neurodbg.models.provision import cache_lock, staging_dir
from neurodbg.progress import count_progress

MANIFEST = "manifest.json"
SHARDS = "shards"
FORMAT = 1


def corpora_dir() -> Path:
    return paths.home() / "corpora"


def entry_for(name: str) -> CorpusEntry:
    entry = lookup(name)
    if entry is None:
        raise CorpusError(f"no built-in corpus {name!r}; known: {', '.join(entries())}")
    return entry


def cached_dir(entry: CorpusEntry) -> Path:
    return corpora_dir() / entry.name


def read_manifest(corpus_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((corpus_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_ready(entry: CorpusEntry) -> bool:
    """Built, complete, and by the catalogue's current recipe."""
    manifest = read_manifest(cached_dir(entry))
    return manifest is not None and manifest.get("recipe") == entry.recipe and manifest.get("format") == FORMAT


def pull(name: str = "default", *, force: bool = False, progress: bool = True) -> Path:
    """Make sure built-in corpus `name` is built; return its directory."""
    entry = entry_for(name)
    target = cached_dir(entry)
    if is_ready(entry) and not force:
        return target
    with cache_lock(target.parent):
        if is_ready(entry) and not force:
            return target  # another process finished it while we waited
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pull-") as work:
            _build(entry, target, Path(work), progress=progress)
    return target


def open_builtin(name: str = "default", *, progress: bool = True) -> FilesSource:
    """The built-in corpus as a source, building it on first use."""
    entry = entry_for(name)
    directory = pull(name, progress=progress)
    return FilesSource.from_directory(directory, name=entry.name)  # the shards; manifest.json is not a corpus file


def _build(entry: CorpusEntry, target: Path, work: Path, *, progress: bool) -> None:
    mixed: list[tuple[str, Document]] = []
    sources: list[dict[str, Any]] = []
    for source in entry.sources:
        builder = BUILDERS.get(source.builder)
        if builder is None:
            raise CorpusError(f"catalogue source {source.name} names unknown builder {source.builder!r}")
        built = builder(source, work, progress)
        mixed += [(source.name, doc) for doc in built.documents]
        sources.append({"name": source.name, "description": source.description, "licence": source.licence,
                        "version": built.version, "origin": built.origin, "documents": len(built.documents),
                        "chars": sum(len(d.text) for d in built.documents)})
    random.Random(entry.seed).shuffle(mixed)
    with staging_dir(target) as staging:
        shards = _write_shards(mixed, staging / SHARDS, entry.shard_bytes, progress=progress)
        manifest = {"format": FORMAT, "name": entry.name, "description": entry.description, "recipe": entry.recipe,
                    "seed": entry.seed, "documents": len(mixed), "chars": sum(s["chars"] for s in sources),
                    "text_field": "text", "sources": sources, "shards": shards}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def _write_shards(docs: list[tuple[str, Document]], out: Path, shard_bytes: int, *,
                  progress: bool) -> list[dict[str, Any]]:
    out.mkdir(parents=True)
    shards: list[dict[str, Any]] = []
    lines: list[bytes] = []

    def flush() -> None:
        data = b"".join(lines)
        name = f"part-{len(shards):05d}.jsonl"
        (out / name).write_bytes(data)
        shards.append({"file": f"{SHARDS}/{name}", "documents": len(lines), "bytes": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()})
        lines.clear()

    size = 0
    with count_progress("writing shards", len(docs), enabled=progress) as advance:
        for source, doc in docs:
            record = {"text": doc.text, "source": source, "id": doc.id}
            line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode()
            lines.append(line)
            size += len(line)
            if size >= shard_bytes:
                flush()
                size = 0
            advance(1)
        if lines:
            flush()
    return shards
