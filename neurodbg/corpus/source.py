"""`CorpusSource`: a named, fingerprinted, streaming sequence of text documents.

Every reader (text files, JSONL, Parquet, Hugging Face datasets, directories of
any of these) is a subclass that implements `_raw_documents()` and
`fingerprint()`. The base class owns the rules all of them share: documents are
yielded lazily in a fixed order, blank ones are skipped, and a corpus that turns
out to hold no document at all raises `CorpusError` when iteration ends."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from neurodbg.errors import CorpusError


class CorpusSource(ABC):
    """A corpus: `documents()` streams text in a deterministic order, never the
    whole corpus in memory; `fingerprint()` is a sha256 hex digest of the content
    (the bytes read, not paths or dates) and of the settings that change what is
    read (format, text field, split)."""

    name: str

    def documents(self) -> Iterator[str]:
        """Each non-blank document, lazily; raises CorpusError if there is none."""
        found = False
        for doc in self._raw_documents():
            if doc and not doc.isspace():
                found = True
                yield doc
        if not found:
            raise CorpusError(f"corpus {self.name} is empty: it holds no non-blank document")

    @abstractmethod
    def _raw_documents(self) -> Iterator[str]:
        """Documents in order, possibly blank; raise CorpusError on malformed input."""

    @abstractmethod
    def fingerprint(self) -> str:
        """sha256 hex digest identifying the content and the reading settings."""

    def check(self) -> None:
        """Fail now, not in the middle of a scan: read up to the first document
        (which also validates the text field) and raise CorpusError if none."""
        for _ in self.documents():
            return

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
