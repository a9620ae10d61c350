"""`open_corpus(spec)`: decide what a corpus spec is and open it, checking now
what can be checked cheaply (existence, format, text field, not empty)."""

from __future__ import annotations

import os
from pathlib import Path

from neurodbg.corpus.files import FilesSource
from neurodbg.corpus.hf import HFDiskSource, HFHubSource, is_saved_dataset
from neurodbg.corpus.source import CorpusSource
from neurodbg.errors import CorpusError


def open_corpus(spec: str | os.PathLike[str], *, text_field: str = "text", split: str | None = None) -> CorpusSource:
    """Open a corpus:

    - "default" (or another built-in name): the built-in corpus, built on first use;
    - a .txt/.md/.rst/.text file (documents are blank-line-separated paragraphs);
    - a .jsonl/.ndjson file, optionally .gz (field `text_field`);
    - a .parquet file (column `text_field`);
    - a directory: a `datasets` save_to_disk directory (`split` picks one of a
      DatasetDict's splits), else every corpus file below it, sorted by path;
    - "hf:NAME" or "hf:NAME:CONFIG": a hub dataset streamed (online only; `split` defaults to "train").
    """
    text = os.fspath(spec)
    if not text.strip():
        raise CorpusError("the corpus spec is empty")
    if not text_field:
        raise CorpusError("the text field name is empty")
    path = Path(text).expanduser()
    if text.startswith("hf:"):
        source: CorpusSource = HFHubSource(text, text_field, split)
        return source
    if not path.exists():
        from neurodbg.corpus import catalogue, default

        if catalogue.lookup(text) is not None:
            return default.open_builtin(text)
        raise CorpusError(f"no such corpus file or directory: {text}")
    if path.is_dir():
        if is_saved_dataset(path):
            source = HFDiskSource(path, text_field, split)
        else:
            files = FilesSource.from_directory(path, text_field)
            files.validate()
            source = files
    elif path.is_file():
        files = FilesSource.from_file(path, text_field)
        files.validate()
        source = files
    else:
        raise CorpusError(f"{text} is neither a regular file nor a directory")
    source.check()
    return source
