"""Plain-text files (.txt, .md, .rst, .text): documents are paragraphs.

The rule: a document is a run of lines ended by a blank line (empty or only
whitespace) or the end of the file. Lines keep their own line breaks (inner
newlines are part of the text); the final newline of a paragraph is dropped.
A paragraph that grows past `MAX_DOC_CHARS` is cut at the next line end, so a
file without blank lines still streams in bounded pieces. Text is decoded as
UTF-8; undecodable bytes become U+FFFD rather than stopping a long scan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from neurodbg.errors import CorpusError

SUFFIXES = (".txt", ".md", ".rst", ".text")
MAX_DOC_CHARS = 1_000_000


def _open(path: Path) -> TextIO:
    try:
        return open(path, encoding="utf-8", errors="replace", newline=None)
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path}: {exc.strerror or exc}") from None


def text_documents(path: Path) -> Iterator[str]:
    with _open(path) as handle:
        lines: list[str] = []
        size = 0
        try:
            for line in handle:
                if line.strip():
                    lines.append(line)
                    size += len(line)
                    if size < MAX_DOC_CHARS:
                        continue
                if lines:
                    yield "".join(lines).rstrip("\n")
                    lines, size = [], 0
        except OSError as exc:
            raise CorpusError(f"cannot read corpus file {path}: {exc.strerror or exc}") from None
        if lines:
            yield "".join(lines).rstrip("\n")
