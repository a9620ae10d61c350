"""`scan`: one pass over a corpus into a durable atlas.

Resumable: checkpoints are written atomically at intervals (and when the pass
ends); a rerun of the same command picks up after the last checkpoint and,
since batches are a pure function of the sequence stream, ends with the same
atlas as an uninterrupted run. A different model, corpus or settings is
refused before anything is written."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from neurodbg.atlas import records
from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import CorpusError, ScanMemoryError
from neurodbg.model import Model
from neurodbg.progress import RateProgress
from neurodbg.scan import checkpoint
from neurodbg.scan.finalize import check_finite, write_atlas
from neurodbg.scan.scanner import Scanner
from neurodbg.scan.settings import ScanSettings


@dataclass
class ScanSummary:
    atlas: str
    status: str
    sequences: int
    tokens: int
    neurons: int
    seconds: float
    tokens_per_s: float
    resumed_from: int
    images_per_s: float | None = None      # image scans: their sequences are images

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def corpus_identity(source: Any, tokenizer: Any, settings: ScanSettings) -> str:
    """The sequence stream a scan reads: `corpus_settings_fingerprint` (corpus content and reading
    settings, the tokenizer's full definition, seq_len, BOS, separator, dedup, chunking rules)."""
    from neurodbg.corpus import corpus_settings_fingerprint

    return corpus_settings_fingerprint(source, tokenizer, settings.seq_len, settings.bos, settings.dedup)


def legacy_corpus_identity(source: Any, tokenizer: Any, settings: ScanSettings) -> str:
    """The weaker corpus identity that atlases of schema 1 and 2 recorded (no chunking rules'
    version, separator or tokenizer definition beyond its vocabulary). Only to recognise those
    atlases and their checkpoints when they are upgraded; never recorded anew."""
    vocab = sorted(tokenizer.get_vocab().items())
    parts = {"corpus": source.fingerprint(), "tokenizer": hashlib.sha256(json.dumps(vocab).encode()).hexdigest(),
             "seq_len": settings.seq_len, "bos": settings.bos, "dedup": settings.dedup}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass
class Claim:
    """An atlas bound to this scan: the open store, the identity checkpoints are saved under, the
    identities a checkpoint found there may carry, and an empty scanner."""
    store: AtlasStore
    identity: dict[str, str]
    accepted: list[dict[str, str]]
    scanner: Scanner


def sequence_stream(source: Any, model: Model, settings: ScanSettings, *, start: int = 0,
                    shard: tuple[int, int] | None = None) -> Iterator[Any]:
    from neurodbg.corpus import sequences

    stream = sequences(source, model.tokenizer, seq_len=settings.seq_len, bos=settings.bos, dedup=settings.dedup,
                       start=start, shard=shard)
    limit = max_sequences(settings)
    for seq in stream:
        if limit is not None and seq.index >= limit:
            return
        yield seq


def max_sequences(settings: ScanSettings) -> int | None:
    return None if settings.max_tokens is None else math.ceil(settings.max_tokens / settings.seq_len)


def batches(stream: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(islice(stream, size)):
        yield batch


def claim_atlas(model: Model, source: Any, directory: Path, settings: ScanSettings) -> Claim:
    """Open (or create) the atlas and bind it to this model, corpus and settings; refuse a mismatch."""
    if model.tokenizer is None:
        raise CorpusError(f"{model.name} has no tokenizer; a corpus scan needs one")
    scanner = Scanner(model, settings)
    store = AtlasStore.open(directory, create=True)
    try:
        identity = {"model_fingerprint": model.fingerprint(),
                    "corpus_fingerprint": corpus_identity(source, model.tokenizer, settings),
                    "settings_fingerprint": settings.fingerprint()}
        store.claim(identity, {"model_name": model.name, "model_source": model.source, "corpus_name": source.name,
                               "settings_name": "scan",
                               "settings": settings.to_dict(), "sites": [s.name for s in scanner.sites],
                               "hist_edges": settings.hist_edges()},
                    legacy_corpus=lambda: legacy_corpus_identity(source, model.tokenizer, settings))
        accepted = [identity]
        if store.upgraded_identity:     # a checkpoint written before the upgrade carries the old identity
            accepted.append({**identity,
                             "corpus_fingerprint": legacy_corpus_identity(source, model.tokenizer, settings)})
    except BaseException:
        store.close()
        raise
    return Claim(store, identity, accepted, scanner)


def scan(model: Model, source: Any, atlas_dir: str | Path, settings: ScanSettings | None = None, *,
         progress: bool = True, checkpoint_seconds: float = 120.0, stop_after_batches: int | None = None
         ) -> ScanSummary:
    """Scan `source` (a corpus) with `model` into the atlas at `atlas_dir`."""
    settings = settings or ScanSettings()
    directory = Path(atlas_dir).expanduser()
    claim = claim_atlas(model, source, directory, settings)
    store, identity, scanner = claim.store, claim.identity, claim.scanner
    try:
        if store.status == "complete":
            return _summary(store, directory, 0.0, 0)
        done = resume_checkpoint(directory, scanner, claim.accepted)
        resumed_from = scanner.sequences
        started = time.perf_counter()
        if not done:
            try:
                _run(scanner, source, model, settings, directory, identity, progress, checkpoint_seconds,
                     stop_after_batches)
            except RuntimeError as error:
                if not out_of_memory(error):
                    raise
                raise ScanMemoryError(
                    f"out of memory scanning batches of {settings.batch_size} sequences on {model.device}: "
                    f"scan into a new atlas with a smaller --batch-size (it is part of the scan's settings); "
                    f"{directory} keeps its last checkpoint") from error
            if stop_after_batches is not None and not _finished(scanner, source, model, settings):
                return _summary(store, directory, time.perf_counter() - started, resumed_from, status="partial",
                                scanner=scanner)
            save_checkpoint(directory, identity, scanner, done=True)
        if scanner.sequences == 0:
            raise CorpusError(f"corpus {source.name} yielded no sequence of {settings.seq_len} tokens")
        elapsed = time.perf_counter() - started
        tokens = scanner.sequences * settings.seq_len
        summary = {"sequences": scanner.sequences, "tokens": tokens,
                   "scan_seconds": round(elapsed, 2)}
        with RateProgress(progress, "writing atlas", sum(s.width for s in scanner.stats.values())) as bar:
            write_atlas(store, scanner, model, sequence_stream(source, model, settings), summary, bar.advance)
        checkpoint.remove(directory)
        return _summary(store, directory, elapsed, resumed_from)
    finally:
        store.close()


def out_of_memory(error: RuntimeError) -> bool:
    """torch's allocation failures: CUDA's `OutOfMemoryError`, the CPU allocator's RuntimeError."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or "DefaultCPUAllocator" in text or "out of memory" in text


def _finished(scanner: Scanner, source: Any, model: Model, settings: ScanSettings) -> bool:
    return next(sequence_stream(source, model, settings, start=scanner.sequences), None) is None


def _run(scanner: Scanner, source: Any, model: Model, settings: ScanSettings, directory: Path,
         identity: dict[str, str], progress: bool, checkpoint_seconds: float, stop_after: int | None) -> None:
    limit = max_sequences(settings)
    if progress:  # one counting pass over the corpus, so the bar can show an ETA
        from neurodbg.corpus import corpus_stats

        available = corpus_stats(source, model.tokenizer, seq_len=settings.seq_len, bos=settings.bos,
                                 dedup=settings.dedup).sequences
        limit = available if limit is None else min(limit, available)
    total_tokens = None if limit is None else limit * settings.seq_len
    last_save = time.monotonic()
    stream = sequence_stream(source, model, settings, start=scanner.sequences)
    with RateProgress(progress, "scanning", total_tokens, unit="tokens",
                      done=scanner.sequences * settings.seq_len) as bar:
        for n_batch, batch in enumerate(batches(stream, settings.batch_size)):
            scanner.process(batch)
            bar.advance(len(batch) * settings.seq_len)
            if time.monotonic() - last_save >= checkpoint_seconds:
                save_checkpoint(directory, identity, scanner, done=False)
                last_save = time.monotonic()
            if stop_after is not None and n_batch + 1 >= stop_after:
                save_checkpoint(directory, identity, scanner, done=False)
                return


def resume_checkpoint(directory: Path, scanner: Scanner, accepted: list[dict[str, str]]) -> bool:
    """Load the scan's last checkpoint into `scanner` when there is one of an accepted identity
    (another is stale: from an abandoned scan of this still empty atlas); whether its pass was done."""
    state = checkpoint.load(directory)
    if state is None or state.get("identity") not in accepted:
        return False
    scanner.load_state_dict(state["scanner"])
    return bool(state["done"])


def save_checkpoint(directory: Path, identity: dict[str, str], scanner: Scanner, done: bool) -> None:
    """Checkpoint the scan, unless its statistics hold a NaN (then the last good checkpoint stays)."""
    check_finite(scanner)
    checkpoint.save(directory, {"identity": identity, "done": done, "scanner": scanner.state_dict()})


def _summary(store: AtlasStore, directory: Path, elapsed: float, resumed_from: int, status: str | None = None,
             scanner: Scanner | None = None) -> ScanSummary:
    meta = store.meta()
    sequences = scanner.sequences if scanner else int(meta.get("sequences", 0))
    tokens = scanner.sequences * scanner.settings.seq_len if scanner else int(meta.get("tokens", 0))
    neurons = records.neuron_count(store)
    scanned = tokens - resumed_from * (scanner.settings.seq_len if scanner else 0)
    return ScanSummary(atlas=str(directory), status=status or str(meta.get("status")), sequences=sequences,
                       tokens=tokens, neurons=int(neurons), seconds=round(elapsed, 2),
                       tokens_per_s=round(scanned / elapsed, 1) if elapsed > 0 else 0.0, resumed_from=resumed_from)
