"""The atlas export as JSON text: JSON Lines (one neuron per line) or one document.
Records are those of `atlas.export`; see there for the fields."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO

import numpy as np

from neurodbg.atlas.export import (
    KINDS,
    Advance,
    Selection,
    Vocab,
    finite_or_none,
    head_record,
    layer_descriptions,
    layer_neurons,
    layer_sequences,
)
from neurodbg.atlas.store import AtlasStore


def _float16_texts() -> list[str]:
    values = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    return [str(v) if np.isfinite(v) else "null" for v in values]


class JsonEncoder:
    """Writes records as JSON text. Activations and token lists dominate an atlas, so they are
    joined from precomputed texts (each float16 bit pattern's shortest decimal, each sequence's
    ids once per layer) rather than going through `json.dumps` value by value."""

    def __init__(self, vocab: Vocab | None = None) -> None:
        self.acts_text = _float16_texts()
        self.vocab = vocab
        self.token_text = None if vocab is None else [json.dumps(t, ensure_ascii=False) for t in vocab]

    def _tokens(self, ids: np.ndarray) -> str:
        table = self.token_text or []
        size = len(table)
        return ",".join(table[i] if 0 <= i < size else json.dumps(f"<{i}>") for i in ids.tolist())

    def lines(self, store: AtlasStore, selection: Selection) -> Iterator[str]:
        """One JSON object per neuron (no trailing newline)."""
        acts_text = self.acts_text
        with_tokens = "tokens" in selection.fields
        for layer in selection.layers:
            seqs: dict[int, np.ndarray] = {}
            seq_text: dict[int, str] = {}
            if "exemplars" in selection.fields:
                seqs = layer_sequences(store, layer)
            texts = layer_descriptions(store, layer) if "descriptions" in selection.fields else {}
            for item in layer_neurons(store, layer, "exemplars" in selection.fields):
                head = json.dumps(head_record(layer, item, selection, self.vocab), ensure_ascii=False)
                parts = [head[:-1]]
                if "exemplars" in selection.fields:
                    kinds = []
                    for kind, name in KINDS.items():
                        entries = []
                        for rank, seq, value, acts in item.exemplars.get(kind, []):
                            text = seq_text.get(seq)
                            if text is None:
                                ids = seqs.get(int(seq), np.zeros(0, dtype=np.int32))
                                text = '"token_ids":[' + ",".join(map(str, ids.tolist())) + "]"
                                if with_tokens:
                                    text += ',"tokens":[' + self._tokens(ids) + "]"
                                seq_text[seq] = text
                            values = ",".join([acts_text[b] for b in np.frombuffer(acts, dtype=np.uint16).tolist()])
                            entries.append(f'{{"rank":{rank},"seq_index":{seq},"value":{json.dumps(finite_or_none(value))},'
                                           f'"acts":[{values}],{text}}}')
                        kinds.append(f'"{name}":[{",".join(entries)}]')
                    parts.append(f'"exemplars":{{{",".join(kinds)}}}')
                if "descriptions" in selection.fields:
                    parts.append('"descriptions":' + json.dumps(
                        {p: texts.get((int(item.row[0]), p)) for p in "+-"}, ensure_ascii=False))
                yield ", ".join(parts) + "}"



def write_json_lines(store: AtlasStore, out: IO[str], selection: Selection, *, vocab: Vocab | None = None,
                     advance: Advance | None = None) -> int:
    """JSON Lines, one neuron per line; returns neurons written."""
    written = 0
    for line in JsonEncoder(vocab).lines(store, selection):
        out.write(line + "\n")
        written += 1
        if advance is not None:
            advance(1)
    return written


def write_json(store: AtlasStore, out: IO[str], selection: Selection, *, vocab: Vocab | None = None,
               advance: Advance | None = None) -> int:
    """One JSON document `{"meta": {...}, "neurons": [...]}`, still written neuron by neuron."""
    out.write('{"meta": ' + json.dumps(store.meta(), ensure_ascii=False) + ', "neurons": [\n')
    written = 0
    for line in JsonEncoder(vocab).lines(store, selection):
        out.write((",\n" if written else "") + line)
        written += 1
        if advance is not None:
            advance(1)
    out.write("\n]}\n")
    return written


