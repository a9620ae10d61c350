"""Deterministic chunking of a corpus into fixed-length token sequences.

The rules (CHUNKING_VERSION 1):

- Each document is tokenized on its own, without special tokens. Documents that
  tokenize to nothing are skipped.
- The documents' tokens are joined into one stream with the tokenizer's EOS id
  between consecutive documents (not before the first nor after the last); a
  tokenizer without EOS falls back to its SEP id, and one with neither is refused.
- The stream is cut into consecutive, non-overlapping windows. With BOS on, each
  window is [BOS] + the next seq_len - 1 stream tokens; otherwise seq_len stream
  tokens. A window may start or end in the middle of a document. The last,
  incomplete window is dropped.
- `bos=None` (auto) means: BOS on iff the tokenizer itself prepends its BOS when
  encoding text with special tokens (Llama 2/3, Gemma, Mistral: yes; GPT-2,
  Qwen, SmolLM2: no), i.e. the model sees windows the way it sees a prompt.
- With `dedup`, a window whose ids exactly equal an earlier window's is dropped
  before indices are given; indices then run 0, 1, 2, ... without gaps.
  Windows are compared by a 64-bit BLAKE2b digest of their ids, kept in a set
  (about 70 bytes per unique window: ~1 MB per million tokens at seq_len 64).
- `start` skips indices below it; `shard=(i, n)` keeps indices with
  index % n == i. Both filter the same global stream, so indices stay global
  and the union of all shards is the unsharded stream. Every caller still
  tokenizes the corpus from its beginning (dedup needs every earlier window).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from neurodbg.corpus.source import CorpusSource
from neurodbg.errors import CorpusError

CHUNKING_VERSION = 1
BATCH_DOCS = 64           # documents tokenized per tokenizer call
BATCH_CHARS = 1_000_000   # ... or fewer when they are long


@dataclass(frozen=True)
class Sequence:
    index: int       # global position in the (deduplicated) sequence stream: 0, 1, 2, ...
    ids: list[int]   # exactly seq_len token ids


@dataclass(frozen=True)
class Specials:
    """The special ids a chunking uses: BOS at the start of each window (or None), the document separator."""

    bos: int | None
    sep: int


def resolve_specials(tokenizer: Any, bos: bool | None) -> Specials:
    eos = getattr(tokenizer, "eos_token_id", None)
    sep = eos if eos is not None else getattr(tokenizer, "sep_token_id", None)
    if sep is None:
        raise CorpusError("the tokenizer has neither an EOS nor a SEP token to separate documents")
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos is True:
        if bos_id is None:
            raise CorpusError("bos=True, but the tokenizer has no BOS token")
        return Specials(int(bos_id), int(sep))
    if bos is None and bos_id is not None:
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        if probe and probe[0] == bos_id:
            return Specials(int(bos_id), int(sep))
    return Specials(None, int(sep))


def _check_settings(seq_len: int, bos_on: bool, start: int, shard: tuple[int, int] | None) -> None:
    if seq_len < (2 if bos_on else 1):
        raise CorpusError(f"seq_len must be at least {2 if bos_on else 1}{' with BOS' if bos_on else ''}, "
                          f"got {seq_len}")
    if start < 0:
        raise CorpusError(f"start must be >= 0, got {start}")
    if shard is not None:
        i, n = shard
        if n < 1 or not 0 <= i < n:
            raise CorpusError(f"shard must be (i, n) with 0 <= i < n, got {shard}")


class SequenceStream:
    """The whole, unfiltered window stream of a corpus, counting as it goes.

    After a full iteration: `documents` (non-blank documents read), `chars`,
    `tokens` (document tokens, without BOS/separators), `windows` (cut, before
    dedup), `duplicates` (dropped) and `sequences` (kept)."""

    def __init__(self, source: CorpusSource, tokenizer: Any, *, seq_len: int = 64, bos: bool | None = None,
                 dedup: bool = True) -> None:
        self.source = source
        self.tokenizer = tokenizer
        self.specials = resolve_specials(tokenizer, bos)
        _check_settings(seq_len, self.specials.bos is not None, 0, None)
        self.seq_len = seq_len
        self.dedup = dedup
        self.documents = self.chars = self.tokens = self.windows = self.duplicates = self.sequences = 0

    def _token_lists(self) -> Iterator[list[int]]:
        batch: list[str] = []
        size = 0
        for doc in self.source.documents():
            self.documents += 1
            self.chars += len(doc)
            batch.append(doc)
            size += len(doc)
            if len(batch) >= BATCH_DOCS or size >= BATCH_CHARS:
                yield from self._encode(batch)
                batch, size = [], 0
        if batch:
            yield from self._encode(batch)

    def _encode(self, batch: list[str]) -> list[list[int]]:
        encoded = self.tokenizer(batch, add_special_tokens=False)["input_ids"]
        return [list(ids) for ids in encoded]

    def __iter__(self) -> Iterator[Sequence]:
        self.documents = self.chars = self.tokens = self.windows = self.duplicates = self.sequences = 0
        bos = self.specials.bos
        payload = self.seq_len - (1 if bos is not None else 0)
        head = [bos] if bos is not None else []
        seen: set[int] = set()
        buffer: list[int] = []
        pos = 0
        first = True
        for ids in self._token_lists():
            if not ids:
                continue
            self.tokens += len(ids)
            if not first:
                buffer.append(self.specials.sep)
            first = False
            buffer.extend(ids)
            while len(buffer) - pos >= payload:
                window = head + buffer[pos:pos + payload]
                pos += payload
                self.windows += 1
                if self.dedup:
                    key = int.from_bytes(blake2b(array("q", window).tobytes(), digest_size=8).digest(), "little")
                    if key in seen:
                        self.duplicates += 1
                        continue
                    seen.add(key)
                yield Sequence(self.sequences, window)
                self.sequences += 1
            if pos:
                del buffer[:pos]
                pos = 0
        if self.sequences == 0:
            raise CorpusError(f"corpus {self.source.name} is too small: {self.tokens} tokens make no sequence "
                              f"of {self.seq_len}")


def sequences(source: CorpusSource, tokenizer: Any, *, seq_len: int = 64, bos: bool | None = None,
              dedup: bool = True, start: int = 0, shard: tuple[int, int] | None = None) -> Iterator[Sequence]:
    """Fixed-length token sequences of `source` (see the module docstring for the
    exact rules). Settings are checked now; the corpus is read lazily."""
    stream = SequenceStream(source, tokenizer, seq_len=seq_len, bos=bos, dedup=dedup)
    _check_settings(seq_len, stream.specials.bos is not None, start, shard)
    return _filtered(stream, start, shard)


def _filtered(stream: SequenceStream, start: int, shard: tuple[int, int] | None) -> Iterator[Sequence]:
    i, n = shard or (0, 1)
    for seq in stream:
        if seq.index >= start and seq.index % n == i:
            yield seq
