"""One counting pass over a corpus: documents, characters, tokens and sequences
(for `neurodbg corpus info`, and for a scan that wants a total for its ETA)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from neurodbg.corpus.chunking import SequenceStream
from neurodbg.corpus.fingerprint import corpus_settings_fingerprint
from neurodbg.corpus.source import CorpusSource


@dataclass(frozen=True)
class CorpusStats:
    name: str
    documents: int
    chars: int
    tokens: int              # document tokens, without BOS or separators
    windows: int             # cut before dedup
    duplicates: int          # windows dropped as exact repeats
    sequences: int           # what `sequences()` yields
    seq_len: int
    bos: bool
    dedup: bool
    fingerprint: str         # of the corpus (content + reading settings)
    settings_fingerprint: str  # of the sequence stream (+ tokenizer, seq_len, BOS, dedup)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def corpus_stats(source: CorpusSource, tokenizer: Any, *, seq_len: int = 64, bos: bool | None = None,
                 dedup: bool = True) -> CorpusStats:
    stream = SequenceStream(source, tokenizer, seq_len=seq_len, bos=bos, dedup=dedup)
    for _ in stream:
        pass
    return CorpusStats(name=source.name, documents=stream.documents, chars=stream.chars, tokens=stream.tokens,
                       windows=stream.windows, duplicates=stream.duplicates, sequences=stream.sequences,
                       seq_len=seq_len, bos=stream.specials.bos is not None, dedup=dedup,
                       fingerprint=source.fingerprint(),
                       settings_fingerprint=corpus_settings_fingerprint(source, tokenizer, seq_len, bos, dedup))
