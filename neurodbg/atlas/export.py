"""Streaming export of an atlas: JSON Lines (one neuron per line), one JSON
document, or Parquet — a layer at a time, so memory stays that of one layer
however large the atlas.

Every format carries the same record per neuron (`Parquet` rows read back with
pyarrow's `to_pylist()` equal the JSON objects):

    id, layer, neuron                                 always
    site, n_tokens, mean, std, frac_active,
    max_value, min_value                              field "stats"
    quantiles  {"+0.001": v, "-0.001": v, ...}        field "quantiles" (null where unavailable)
    hist       [counts over meta.hist_edges]          field "hist"
    promoted, suppressed  [{"id", "logit"}, ...]      field "output_tokens" (+ "token" with "tokens")
    exemplars  {"top": [...], "bottom": [...],
                "random": [...]}, each entry
               {"rank", "seq_index", "value",
                "acts", "token_ids"}                  field "exemplars" (+ "tokens" with "tokens")
    descriptions {"+": {"text", "score",
                  "explainer"} | null, "-": ...}       field "descriptions" (the best candidate)

Activations are stored as float16; JSON writes each as the shortest decimal that
reads back to the same float16 (non-finite ones as null), Parquet as float32.
A file is written under a temporary name beside the target and renamed into
place only when complete, so a failed or killed export never leaves a file that
looks finished."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from neurodbg.atlas import descriptions, records
from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import ExportError

FIELDS = ("stats", "quantiles", "hist", "output_tokens", "exemplars", "tokens", "descriptions")
DEFAULT_FIELDS = tuple(f for f in FIELDS if f != "tokens")   # decoded text doubles the size: on request
Advance = Callable[[int], None]
KINDS = {"+": "top", "-": "bottom", "r": "random"}
STATS = ("site", "n_tokens", "mean", "std", "frac_active", "max_value", "min_value")
Vocab = Sequence[str]     # each token id's text (the tokenizer's decode of that one id)


@dataclass(frozen=True)
class Selection:
    layers: tuple[int, ...]
    fields: frozenset[str]


def select(store: AtlasStore, layers: Sequence[int] | None = None, fields: Iterable[str] | None = None,
           *, vocab: Vocab | None = None) -> Selection:
    """Check what to export against the atlas: unknown layers or fields are one clear error."""
    records.require_complete(store)
    have = records.layers(store)
    chosen = tuple(have) if layers is None else tuple(dict.fromkeys(int(x) for x in layers))
    missing = [x for x in chosen if x not in have]
    if missing:
        span = f"{have[0]}-{have[-1]}" if have else "none"
        raise ExportError(f"layer {missing[0]} is not in this atlas (its layers: {span})")
    wanted = frozenset(DEFAULT_FIELDS if fields is None else fields)
    unknown = sorted(wanted - set(FIELDS))
    if unknown:
        raise ExportError(f"unknown export field {unknown[0]!r}; choose from {', '.join(FIELDS)}")
    if "tokens" in wanted and vocab is None:
        raise ExportError("the 'tokens' field needs the atlas's tokenizer, which is not available here; "
                          "leave it out (token_ids are always exported)")
    return Selection(chosen, wanted)


# -- reading one layer ------------------------------------------------------------------------------
@dataclass
class NeuronRows:
    row: tuple[Any, ...]                                        # the neurons table's columns after layer
    exemplars: dict[str, list[tuple[int, int, float, bytes]]] = field(default_factory=dict)


def layer_neurons(store: AtlasStore, layer: int, want_exemplars: bool) -> Iterator[NeuronRows]:
    """Neurons of one layer in index order, each with its exemplar rows (a merge of two ordered cursors)."""
    neurons = store.conn.execute(
        "SELECT neuron, site, n_tokens, mean, std, frac_active, max_value, min_value, quantiles, hist, promoted, "
        "suppressed FROM neurons WHERE layer = ? ORDER BY neuron", (layer,))
    if not want_exemplars:
        for row in neurons:
            yield NeuronRows(row)
        return
    rows = store.conn.execute("SELECT neuron, kind, rank, seq_index, value, acts FROM exemplars WHERE layer = ? "
                              "ORDER BY neuron, kind, rank", (layer,))
    pending = next(rows, None)
    for row in neurons:
        item = NeuronRows(row)
        while pending is not None and pending[0] <= row[0]:
            if pending[0] == row[0]:
                item.exemplars.setdefault(pending[1], []).append(pending[2:])
            pending = next(rows, None)
        yield item


def layer_sequences(store: AtlasStore, layer: int) -> dict[int, np.ndarray]:
    """Token ids of the sequences this layer's exemplars come from (bounded by the layer's width)."""
    return {int(i): np.frombuffer(ids, dtype=np.int32) for i, ids in store.conn.execute(
        "SELECT seq_index, ids FROM sequences WHERE seq_index IN "
        "(SELECT DISTINCT seq_index FROM exemplars WHERE layer = ?)", (layer,))}


def layer_descriptions(store: AtlasStore, layer: int) -> dict[tuple[int, str], dict[str, Any]]:
    return {(e.neuron, e.polarity): {"text": e.text, "score": e.score, "explainer": e.explainer}
            for e in descriptions.best(store, layers=[layer])}


# -- records as Python objects ----------------------------------------------------------------------
def finite_or_none(x: float | None) -> float | None:
    return None if x is None or x != x or x in (float("inf"), float("-inf")) else float(x)


def _text(vocab: Vocab, token: int) -> str:
    return vocab[token] if 0 <= token < len(vocab) else f"<{token}>"


def _pairs(text: str | None, vocab: Vocab | None) -> list[dict[str, Any]]:
    out = []
    for token, logit in json.loads(text) if text else []:
        entry: dict[str, Any] = {"id": int(token), "logit": float(logit)}
        if vocab is not None:
            entry["token"] = _text(vocab, int(token))
        out.append(entry)
    return out


def head_record(layer: int, item: NeuronRows, sel: Selection, vocab: Vocab | None) -> dict[str, Any]:
    """Everything of a record but its exemplars and descriptions."""
    row = item.row
    out: dict[str, Any] = {"id": f"L{layer}/N{row[0]}", "layer": layer, "neuron": int(row[0])}
    if "stats" in sel.fields:
        out.update(zip(STATS, (row[1], row[2], row[3], row[4], row[5], finite_or_none(row[6]), finite_or_none(row[7])),
                       strict=True))
    if "quantiles" in sel.fields:
        out["quantiles"] = json.loads(row[8])
    if "hist" in sel.fields:
        out["hist"] = np.frombuffer(row[9], dtype=np.int32).tolist()
    if "output_tokens" in sel.fields:
        tokens = vocab if "tokens" in sel.fields else None
        out["promoted"], out["suppressed"] = _pairs(row[10], tokens), _pairs(row[11], tokens)
    return out


def iter_records(store: AtlasStore, selection: Selection, *, vocab: Vocab | None = None
                 ) -> Iterator[dict[str, Any]]:
    """Every selected neuron as a dict (the export's record), streamed a layer at a time."""
    for layer in selection.layers:
        seqs = layer_sequences(store, layer) if "exemplars" in selection.fields else {}
        texts = layer_descriptions(store, layer) if "descriptions" in selection.fields else {}
        for item in layer_neurons(store, layer, "exemplars" in selection.fields):
            out = head_record(layer, item, selection, vocab)
            if "exemplars" in selection.fields:
                out["exemplars"] = {name: [_exemplar(e, seqs, selection, vocab) for e in item.exemplars.get(kind, [])]
                                    for kind, name in KINDS.items()}
            if "descriptions" in selection.fields:
                out["descriptions"] = {p: texts.get((int(item.row[0]), p)) for p in "+-"}
            yield out


def _exemplar(e: tuple[int, int, float, bytes], seqs: dict[int, np.ndarray], sel: Selection,
              vocab: Vocab | None) -> dict[str, Any]:
    rank, seq, value, acts = e
    values = np.frombuffer(acts, dtype=np.float16).astype(np.float64)
    listed: list[float | None] = list(values.tolist())
    finite = np.isfinite(values)
    if not finite.all():      # as JSON has them: null
        listed = [v if ok else None for v, ok in zip(listed, finite.tolist(), strict=True)]
    ids = seqs.get(int(seq), np.zeros(0, dtype=np.int32)).tolist()
    out: dict[str, Any] = {"rank": rank, "seq_index": seq, "value": finite_or_none(value), "acts": listed,
                           "token_ids": ids}
    if "tokens" in sel.fields and vocab is not None:
        out["tokens"] = [_text(vocab, t) for t in ids]
    return out


@contextlib.contextmanager
def atomic_file(target: Path, *, binary: bool = False) -> Iterator[tuple[Path, IO[Any]]]:
    """A temporary file beside `target`, renamed over it only when the block finishes; removed
    on any failure. Yields (temporary path, open handle)."""
    target = Path(target).expanduser()
    if target.is_dir():
        raise ExportError(f"cannot write {target}: it is a directory")
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".partial")
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from None
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)       # as a plainly created file would be (mkstemp makes it 0600)
        handle: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        with handle:
            yield tmp, handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}; nothing was left there") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
