"""Labelled prompt sets for probes: a CSV file (columns `text` and `label`), a JSONL
file (one `{"text": ..., "label": ...}` per line), or an example built from the
default corpus's sources (`example:sources`: the opening of documents from each
of its eight sources, from the King James Bible to the calendar pages, labelled
by source)."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from neurodbg.errors import CorpusError, ProbeDataError

EXAMPLES = ("sources",)
MAX_ROWS = 100_000
MAX_TEXT = 4_000          # characters of one prompt


@dataclass(frozen=True)
class ProbeData:
    name: str
    texts: list[str]
    labels: list[str]

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))


def _checked(name: str, texts: list[str], labels: list[str]) -> ProbeData:
    if len(texts) != len(labels):
        raise ProbeDataError(f"{name}: {len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise ProbeDataError(f"{name} holds no labelled prompt")
    counts = Counter(labels)
    if len(counts) < 2:
        raise ProbeDataError(f"{name} has one class ({next(iter(counts))!r}); a probe needs at least two")
    small = [label for label, n in counts.items() if n < 2]
    if small:
        raise ProbeDataError(f"{name}: class {small[0]!r} has one prompt; cross-validation needs two per class")
    return ProbeData(name, texts, labels)


def _row(name: str, where: str, text: object, label: object) -> tuple[str, str]:
    if not isinstance(text, str) or not text.strip():
        raise ProbeDataError(f"{name} {where}: no text")
    if label is None or isinstance(label, (dict, list)) or str(label).strip() == "":
        raise ProbeDataError(f"{name} {where}: no label")
    return text[:MAX_TEXT], str(label).strip()


def load_probe_data(spec: str | Path, *, per_class: int = 100, seed: int = 0) -> ProbeData:
    """A file (.csv, .jsonl / .ndjson) or `example:NAME` (`per_class` prompts of each class)."""
    text_spec = str(spec)
    if text_spec.startswith("example:"):
        return example_set(text_spec.removeprefix("example:"), per_class=per_class, seed=seed)
    path = Path(text_spec).expanduser()
    if not path.is_file():
        raise ProbeDataError(f"no labelled prompt set at {path}" + (": it is a directory" if path.is_dir() else ""))
    texts: list[str] = []
    labels: list[str] = []
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise ProbeDataError(f"{path}: a labelled prompt set is a .csv or .jsonl file")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            records = _csv_records(path, handle) if suffix == ".csv" else _jsonl_records(path, handle)
            for line, record in records:
                text, label = _row(str(path), f"line {line}", record.get("text"), record.get("label"))
                texts.append(text)
                labels.append(label)
                if len(texts) > MAX_ROWS:
                    raise ProbeDataError(f"{path}: more than {MAX_ROWS:,} rows")
    except UnicodeDecodeError:
        raise ProbeDataError(f"{path} is not UTF-8 text") from None
    except csv.Error as exc:
        raise ProbeDataError(f"{path}: malformed CSV ({exc})") from None
    return _checked(str(path), texts, labels)


def _csv_records(path: Path, handle: TextIO) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, row) of a CSV with `text` and `label` columns."""
    reader = csv.DictReader(handle)
    if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
        raise ProbeDataError(f"{path}: a probe CSV needs the columns text and label "
                             f"(found {', '.join(reader.fieldnames or []) or 'none'})")
    for line, record in enumerate(reader, start=2):
        if None in record:
            raise ProbeDataError(f"{path} line {line}: more fields than the header names")
        yield line, dict(record)


def _jsonl_records(path: Path, handle: TextIO) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, object) of each non-blank JSONL line."""
    for line, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ProbeDataError(f"{path} line {line}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ProbeDataError(f"{path} line {line}: expected an object with text and label")
        yield line, record


def example_set(name: str, *, per_class: int = 100, seed: int = 0, chars: int = 200) -> ProbeData:
    """`sources`: the first `chars` characters of `per_class` documents of each default-corpus source."""
    if name not in EXAMPLES:
        raise ProbeDataError(f"no example set {name!r}; known: {', '.join(EXAMPLES)}")
    from neurodbg.corpus.default import SHARDS, pull

    try:
        directory = pull("default", progress=False)
    except CorpusError as exc:
        raise ProbeDataError(f"example:{name} needs the default corpus: {exc}") from None
    by_source: dict[str, list[str]] = {}
    for shard in sorted((directory / SHARDS).glob("*.jsonl")):
        with shard.open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                text = " ".join(str(record["text"]).split())[:chars]
                if len(text) >= chars // 2:
                    by_source.setdefault(str(record["source"]), []).append(text)
    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[str] = []
    for source in sorted(by_source):
        chosen = rng.sample(by_source[source], min(per_class, len(by_source[source])))
        texts += chosen
        labels += [source] * len(chosen)
    return _checked(f"example:{name}", texts, labels)
