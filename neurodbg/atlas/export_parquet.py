"""The atlas export as Parquet (pyarrow): one row per neuron with the records of
`atlas.export` (see there for the fields). The per-neuron columns go through
`Table.from_pylist`; the exemplars, nearly all of the data, are built as flat
arrays with list offsets, a row group at a time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neurodbg.atlas import records
from neurodbg.atlas.export import (
    KINDS,
    STATS,
    Advance,
    NeuronRows,
    Selection,
    Vocab,
    head_record,
    layer_descriptions,
    layer_neurons,
    layer_sequences,
)
from neurodbg.atlas.store import AtlasStore

ROWS_PER_GROUP = 256


def schema(selection: Selection, quantile_keys: list[str]) -> pa.Schema:
    with_tokens = "tokens" in selection.fields
    cols: list[pa.Field] = [pa.field("id", pa.string()), pa.field("layer", pa.int32()),
                            pa.field("neuron", pa.int32())]
    if "stats" in selection.fields:
        cols += [pa.field("site", pa.string()), pa.field("n_tokens", pa.int64())]
        cols += [pa.field(name, pa.float64()) for name in STATS[2:]]
    if "quantiles" in selection.fields:
        cols.append(pa.field("quantiles", pa.struct([pa.field(k, pa.float64()) for k in quantile_keys])))
    if "hist" in selection.fields:
        cols.append(pa.field("hist", pa.list_(pa.int32())))
    if "output_tokens" in selection.fields:
        pair = [pa.field("id", pa.int32()), pa.field("logit", pa.float64())]
        if with_tokens:
            pair.append(pa.field("token", pa.string()))
        cols += [pa.field("promoted", pa.list_(pa.struct(pair))), pa.field("suppressed", pa.list_(pa.struct(pair)))]
    if "descriptions" in selection.fields:
        text = pa.struct([pa.field("text", pa.string()), pa.field("score", pa.float64()),
                          pa.field("explainer", pa.string())])
        cols.append(pa.field("descriptions", pa.struct([pa.field("+", text), pa.field("-", text)])))
    if "exemplars" in selection.fields:
        cols.append(pa.field("exemplars", _exemplars_type(with_tokens)))
    return pa.schema(cols)


def _entry_type(with_tokens: bool) -> pa.StructType:
    entry = [pa.field("rank", pa.int32()), pa.field("seq_index", pa.int64()), pa.field("value", pa.float64()),
             pa.field("acts", pa.list_(pa.float32())), pa.field("token_ids", pa.list_(pa.int32()))]
    if with_tokens:
        entry.append(pa.field("tokens", pa.list_(pa.string())))
    return pa.struct(entry)


def _exemplars_type(with_tokens: bool) -> pa.StructType:
    return pa.struct([pa.field(name, pa.list_(_entry_type(with_tokens))) for name in KINDS.values()])


def _offsets(lengths: list[int]) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32), pa.int32())


def _kind_column(items: list[NeuronRows], kind: str, seqs: dict[int, np.ndarray], vocab: Vocab | None) -> pa.Array:
    """list<entry> for one kind of exemplar over a group of neurons, from flat arrays."""
    rows = [row for item in items for row in item.exemplars.get(kind, [])]
    blobs = [row[3] for row in rows]
    acts = np.frombuffer(b"".join(blobs), dtype=np.float16).astype(np.float32)
    ids = [seqs.get(int(row[1]), np.zeros(0, dtype=np.int32)) for row in rows]
    values = np.array([row[2] for row in rows], dtype=np.float64)
    children = [pa.array(np.array([row[0] for row in rows], dtype=np.int32)),
                pa.array(np.array([row[1] for row in rows], dtype=np.int64)),
                pa.array(values, mask=~np.isfinite(values)),
                pa.ListArray.from_arrays(_offsets([len(b) // 2 for b in blobs]),
                                         pa.array(acts, mask=~np.isfinite(acts))),
                pa.ListArray.from_arrays(_offsets([len(i) for i in ids]),
                                         pa.array(np.concatenate(ids) if ids else np.zeros(0, np.int32), pa.int32()))]
    with_tokens = vocab is not None
    if with_tokens:
        assert vocab is not None
        size = len(vocab)
        texts = [vocab[t] if 0 <= t < size else f"<{t}>" for i in ids for t in i.tolist()]
        children.append(pa.ListArray.from_arrays(_offsets([len(i) for i in ids]), pa.array(texts, pa.string())))
    entries = pa.StructArray.from_arrays(children, fields=list(_entry_type(with_tokens)))
    return pa.ListArray.from_arrays(_offsets([len(item.exemplars.get(kind, [])) for item in items]), entries)


def _table(layer: int, items: list[NeuronRows], selection: Selection, target: pa.Schema, seqs: dict[int, np.ndarray],
           texts: dict[tuple[int, str], dict[str, Any]], vocab: Vocab | None) -> pa.Table:
    heads = []
    for item in items:
        head = head_record(layer, item, selection, vocab)
        if "descriptions" in selection.fields:
            head["descriptions"] = {p: texts.get((int(item.row[0]), p)) for p in "+-"}
        heads.append(head)
    if "exemplars" not in selection.fields:
        return pa.Table.from_pylist(heads, schema=target)
    table = pa.Table.from_pylist(heads, schema=target.remove(target.get_field_index("exemplars")))
    with_tokens = "tokens" in selection.fields
    kinds = [_kind_column(items, kind, seqs, vocab if with_tokens else None) for kind in KINDS]
    exemplars = pa.StructArray.from_arrays(kinds, fields=list(_exemplars_type(with_tokens)))
    return table.append_column(target.field("exemplars"), exemplars)


def write_parquet(store: AtlasStore, sink: Path | IO[bytes], selection: Selection, *, vocab: Vocab | None = None,
                  advance: Advance | None = None, rows_per_group: int = ROWS_PER_GROUP) -> int:
    """Parquet (zstd), one row group per `rows_per_group` neurons of a layer; returns neurons written."""
    first = records.quantile_rows(store)[:1]
    target = schema(selection, list(json.loads(first[0][2])) if first else [])
    written = 0
    with pq.ParquetWriter(str(sink) if isinstance(sink, Path) else sink, target, compression="zstd") as writer:
        for layer in selection.layers:
            seqs = layer_sequences(store, layer) if "exemplars" in selection.fields else {}
            texts = layer_descriptions(store, layer) if "descriptions" in selection.fields else {}
            group: list[NeuronRows] = []
            for item in [*layer_neurons(store, layer, "exemplars" in selection.fields), None]:
                if item is not None:
                    group.append(item)
                if group and (item is None or len(group) >= rows_per_group):
                    writer.write_table(_table(layer, group, selection, target, seqs, texts, vocab))
                    written += len(group)
                    if advance is not None:
                        advance(len(group))
                    group = []
    return written
