"""JSON Lines files (.jsonl, .ndjson, optionally gzip-compressed): one JSON
object per line, the document in field `text_field`.

Blank lines are skipped, and so are records whose text is null or empty. A line
that is not a JSON object, lacks the field, or holds a non-string there raises
CorpusError naming `file:line`."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

from neurodbg.errors import CorpusError

SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")


def _open(path: Path) -> io.BufferedIOBase:
    try:
        if path.name.endswith(".gz"):
            return gzip.open(path, "rb")
        return open(path, "rb")
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path}: {exc.strerror or exc}") from None


def _field_list(record: dict[str, object]) -> str:
    return ", ".join(repr(k) for k in record) or "none"


def jsonl_documents(path: Path, text_field: str,
                    _read_errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)) -> Iterator[str]:
    # The error tuple is bound at definition time: a generator closed during interpreter
    # shutdown must not look up module globals (already cleared) in its except clause.
    with _open(path) as handle:
        number = 0
        try:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except (ValueError, UnicodeDecodeError) as exc:
                    reason = str(exc).split("\n")[0]
                    raise CorpusError(f"{path}:{number}: malformed JSON line ({reason})") from None
                if not isinstance(record, dict):
                    raise CorpusError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
                if text_field not in record:
                    raise CorpusError(f"{path}:{number}: no field {text_field!r}; fields: {_field_list(record)}")
                text = record[text_field]
                if text is None:
                    continue
                if not isinstance(text, str):
                    raise CorpusError(f"{path}:{number}: field {text_field!r} holds {type(text).__name__}, "
                                      "not a string")
                yield text
        except _read_errors as exc:
            where = f"{path}:{number + 1}" if number else str(path)
            raise CorpusError(f"cannot read corpus file {where}: {exc}") from None
