"""Reading an atlas: neuron ids (`L5/N123`), neuron records, summaries, and the row
queries the describe loop and the analyses read (all of the atlas's SQL lives in
this package)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import AtlasError, NeuronIndexError

_ID = re.compile(r"^L(\d+)/N(\d+)([+-]?)$")


def parse_neuron_id(text: str) -> tuple[int, int, str]:
    """`L5/N123` -> (5, 123, ''); `L5/N123+` -> (5, 123, '+')."""
    match = _ID.match(text.strip())
    if not match:
        raise NeuronIndexError(f"malformed neuron id {text!r}; expected like L5/N123 (optionally + or -)")
    return int(match[1]), int(match[2]), match[3]


@dataclass
class Exemplar:
    kind: str
    rank: int
    seq_index: int
    value: float
    acts: list[float]
    token_ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


@dataclass
class NeuronRecord:
    layer: int
    neuron: int
    site: str
    n_tokens: int
    mean: float
    std: float
    frac_active: float
    max_value: float | None
    min_value: float | None
    quantiles: dict[str, float | None]
    hist: list[int]
    promoted: list[list[float]] | None
    suppressed: list[list[float]] | None
    exemplars: dict[str, list[Exemplar]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"L{self.layer}/N{self.neuron}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["id"] = self.id
        return out


def require_complete(store: AtlasStore) -> None:
    status = store.status
    if status is None:
        raise AtlasError(f"{store.directory} holds no scan yet")
    if status != "complete":
        raise AtlasError(f"the scan of {store.directory} has not finished (status: {status}); rerun `neurodbg scan`")


def neuron(store: AtlasStore, layer: int, index: int, *, decode: Any = None) -> NeuronRecord:
    require_complete(store)
    row = store.conn.execute(
        "SELECT layer, neuron, site, n_tokens, mean, std, frac_active, max_value, min_value, quantiles, hist,"
        " promoted, suppressed FROM neurons WHERE layer = ? AND neuron = ?", (layer, index)).fetchone()
    if row is None:
        span = store.conn.execute("SELECT MIN(layer), MAX(layer), MAX(neuron) FROM neurons").fetchone()
        raise NeuronIndexError(f"no neuron L{layer}/N{index} in this atlas (layers {span[0]}-{span[1]}, "
                               f"neurons 0-{span[2]})")
    record = NeuronRecord(
        layer=row[0], neuron=row[1], site=row[2], n_tokens=row[3], mean=row[4], std=row[5], frac_active=row[6],
        max_value=row[7], min_value=row[8], quantiles=json.loads(row[9]),
        hist=np.frombuffer(row[10], dtype=np.int32).tolist(),
        promoted=json.loads(row[11]) if row[11] else None, suppressed=json.loads(row[12]) if row[12] else None)
    rows = store.conn.execute(
        "SELECT e.kind, e.rank, e.seq_index, e.value, e.acts, s.ids FROM exemplars e "
        "LEFT JOIN sequences s ON s.seq_index = e.seq_index WHERE e.layer = ? AND e.neuron = ? "
        "ORDER BY e.kind, e.rank", (layer, index))
    for kind, rank, seq_index, value, acts, ids in rows:
        token_ids = np.frombuffer(ids, dtype=np.int32).tolist() if ids else []
        tokens = [decode([t]) for t in token_ids] if decode else []
        record.exemplars.setdefault(kind, []).append(Exemplar(
            kind, rank, seq_index, value, np.frombuffer(acts, dtype=np.float16).astype(float).tolist(),
            token_ids, tokens))
    return record


def info(store: AtlasStore) -> dict[str, Any]:
    meta = store.meta()
    counts = store.conn.execute("SELECT COUNT(*), COUNT(DISTINCT layer) FROM neurons").fetchone()
    size = sum(p.stat().st_size for p in store.directory.iterdir() if p.is_file() and p.name.startswith("atlas.db"))
    meta.update({"neurons": counts[0], "layers": counts[1], "database_bytes": size,
                 "bytes_per_neuron": round(size / counts[0], 1) if counts[0] else None})
    return meta


# -- rows for the library's readers ---------------------------------------------------------------
def neuron_count(store: AtlasStore) -> int:
    return int(store.conn.execute("SELECT COUNT(*) FROM neurons").fetchone()[0])


def layers(store: AtlasStore) -> list[int]:
    """The scanned layers, ascending."""
    return [int(r[0]) for r in store.conn.execute("SELECT DISTINCT layer FROM neurons ORDER BY layer")]


def layer_sites(store: AtlasStore) -> dict[int, str]:
    """Each scanned layer's site."""
    return {int(layer): site for layer, site in store.conn.execute("SELECT DISTINCT layer, site FROM neurons")}


def layer_widths(store: AtlasStore) -> dict[int, int]:
    """Neurons per scanned layer (an image atlas's sites differ in width)."""
    return {int(layer): int(n) for layer, n in store.conn.execute("SELECT layer, COUNT(*) FROM neurons GROUP BY layer")}


def width(store: AtlasStore) -> int:
    """Neurons per layer (the largest index + 1; 0 for an empty atlas)."""
    row = store.conn.execute("SELECT MAX(neuron) + 1 FROM neurons").fetchone()
    return int(row[0] or 0)


def quantile_rows(store: AtlasStore) -> list[tuple[int, int, str]]:
    """(layer, neuron, quantiles JSON) of every neuron."""
    return [(int(a), int(b), str(c)) for a, b, c in
            store.conn.execute("SELECT layer, neuron, quantiles FROM neurons ORDER BY layer, neuron")]


def sequences(store: AtlasStore) -> Iterator[tuple[int, np.ndarray]]:
    """(sequence index, int32 token ids) of every stored sequence, by index."""
    for index, ids in store.conn.execute("SELECT seq_index, ids FROM sequences ORDER BY seq_index"):
        yield int(index), np.frombuffer(ids, dtype=np.int32)


def exemplar_rows(store: AtlasStore, layer: int) -> Iterator[tuple[int, str, int, int, bytes]]:
    """(neuron, kind, rank, sequence index, float16 activations) of one layer, by neuron, kind, rank."""
    yield from store.conn.execute(
        "SELECT neuron, kind, rank, seq_index, acts FROM exemplars WHERE layer = ? ORDER BY neuron, kind, rank",
        (layer,))


def output_token_rows(store: AtlasStore, layer: int) -> Iterator[tuple[int, str | None, str | None]]:
    """(neuron, promoted JSON, suppressed JSON) of one layer."""
    yield from store.conn.execute("SELECT neuron, promoted, suppressed FROM neurons WHERE layer = ? ORDER BY neuron",
                                  (layer,))


# -- image atlases --------------------------------------------------------------------------------
def is_image_atlas(store: AtlasStore) -> bool:
    return store.get("kind") == "images"


@dataclass
class ImageRow:
    index: int
    name: str
    label: int          # -1: the corpus has no labels
    predicted: int      # -1: the model has no class names
    data: bytes         # PNG or JPEG of the model's input


def images(store: AtlasStore, indices: list[int] | None = None) -> dict[int, ImageRow]:
    """An image atlas's stored exemplar images (all, or those of `indices`)."""
    query = "SELECT seq_index, name, label, predicted, data FROM images"
    if indices is None:
        rows = store.conn.execute(query)
    else:
        wanted = sorted(set(int(i) for i in indices))
        rows = store.conn.execute(f"{query} WHERE seq_index IN ({','.join('?' * len(wanted))})", wanted)
    return {int(r[0]): ImageRow(int(r[0]), r[1], int(r[2]), int(r[3]), bytes(r[4])) for r in rows}
