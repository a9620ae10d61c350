"""`FilesSource`: one corpus file, or every corpus file under a directory.

Formats are known by suffix: text (.txt .md .rst .text), JSON Lines (.jsonl
.ndjson, also .gz) and Parquet (.parquet). A directory is read recursively in
the order of its files' relative POSIX paths (plain code-point sort, the same
on every machine); hidden files and directories (a leading dot) and files of
other suffixes are ignored, and formats may be mixed.

The fingerprint covers each file's bytes and format, the text field where a
format has one, and, for a directory, the relative paths (they fix the order).
A single file's name is not part of it: renaming or moving it changes nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from neurodbg.corpus import jsonl, parquet, text
from neurodbg.corpus.fingerprint import digest_of, file_sha256
from neurodbg.corpus.source import CorpusSource
from neurodbg.errors import CorpusError

READER_VERSION = 1  # bump when a reading rule changes what documents a file yields
FORMATS = {**dict.fromkeys(text.SUFFIXES, "text"), **dict.fromkeys(jsonl.SUFFIXES, "jsonl"),
           **dict.fromkeys(parquet.SUFFIXES, "parquet")}
FIELD_FORMATS = ("jsonl", "parquet")


def format_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):  # ".jsonl.gz" before ".gz"-less matches
        if name.endswith(suffix):
            return FORMATS[suffix]
    return None


def known_suffixes() -> str:
    return ", ".join(FORMATS)


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    relative: str  # POSIX path below the directory; "" for a single-file corpus
    format: str


class FilesSource(CorpusSource):
    def __init__(self, name: str, files: list[CorpusFile], text_field: str = "text") -> None:
        self.name = name
        self.files = files
        self.text_field = text_field
        self._fingerprint: str | None = None

    @classmethod
    def from_file(cls, path: Path, text_field: str = "text") -> FilesSource:
        fmt = format_of(path)
        if fmt is None:
            raise CorpusError(f"unknown corpus format for {path}; expected one of {known_suffixes()}, "
                              "a directory, a `datasets` directory, 'hf:NAME' or 'default'")
        if not os.access(path, os.R_OK):
            raise CorpusError(f"cannot read corpus file {path}: permission denied")
        return cls(str(path), [CorpusFile(path, "", fmt)], text_field)

    @classmethod
    def from_directory(cls, root: Path, text_field: str = "text", name: str | None = None) -> FilesSource:
        found: list[CorpusFile] = []
        errors: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for fname in filenames:
                path = Path(dirpath) / fname
                fmt = format_of(path)
                if fname.startswith(".") or fmt is None:
                    continue
                found.append(CorpusFile(path, path.relative_to(root).as_posix(), fmt))
        if errors:
            raise CorpusError(f"cannot read corpus directory {errors[0].filename}: {errors[0].strerror}")
        if not found:
            raise CorpusError(f"corpus directory {root} holds no corpus files ({known_suffixes()})")
        found.sort(key=lambda f: f.relative)
        return cls(name or str(root), found, text_field)

    def validate(self) -> None:
        """Check the text field where a format can tell without reading documents."""
        for f in self.files:
            if f.format == "parquet":
                parquet.check_parquet_column(f.path, self.text_field)

    def _raw_documents(self) -> Iterator[str]:
        for f in self.files:
            if f.format == "text":
                yield from text.text_documents(f.path)
            elif f.format == "jsonl":
                yield from jsonl.jsonl_documents(f.path, self.text_field)
            else:
                yield from parquet.parquet_documents(f.path, self.text_field)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            uses_field = any(f.format in FIELD_FORMATS for f in self.files)
            self._fingerprint = digest_of({
                "kind": "files", "reader": READER_VERSION,
                "text_field": self.text_field if uses_field else None,
                "files": [[f.relative, f.format, file_sha256(f.path)] for f in self.files]})
        return self._fingerprint
