"""The exemplars an explainer sees and the held-out ones a description is scored on.

For polarity '+' the neuron's top sequences (by max) are used as they are; for
'-' its bottom sequences (by min) with activations negated, so in both cases
"higher means more of what this polarity describes". Ranks alternate: even
ranks are shown to the explainer, odd ranks are held out for scoring together
with the random sequences. The statistical explainer also sees the *other*
polarity's shown sequences (`contrast`: where this polarity is weakest), minus
any sequence that is also held out here. A description is never scored on what
it was made from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from neurodbg.atlas import records
from neurodbg.atlas.store import AtlasStore

POLARITIES = ("+", "-")


@dataclass(frozen=True)
class Excerpt:
    """One sequence: token ids and this neuron's activations (signed by polarity)."""
    seq_index: int
    ids: np.ndarray        # int32 [L]
    acts: np.ndarray       # float32 [L]
    start: int = 1         # first position counted (position 0, the attention sink, is skipped)

    @property
    def peak(self) -> float:
        return float(self.acts[self.start:].max()) if len(self.acts) > self.start else 0.0


@dataclass
class NeuronExemplars:
    layer: int
    neuron: int
    polarity: str
    shown: list[Excerpt] = field(default_factory=list)
    held_out: list[Excerpt] = field(default_factory=list)
    held_out_random: list[Excerpt] = field(default_factory=list)
    contrast: list[Excerpt] = field(default_factory=list)     # the other polarity's shown, signed for this one
    promoted: list[tuple[int, float]] = field(default_factory=list)
    suppressed: list[tuple[int, float]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"L{self.layer}/N{self.neuron}{self.polarity}"

    @property
    def scoring(self) -> list[Excerpt]:
        return self.held_out + self.held_out_random


class ExemplarReader:
    """Reads exemplars from an atlas, a layer at a time (one query per layer)."""

    def __init__(self, store: AtlasStore) -> None:
        self.store = store
        settings = store.meta().get("settings") or {}
        self.start = 1 if settings.get("skip_first", True) else 0
        self.sequences = dict(records.sequences(store))

    def token_frequencies(self, vocab_size: int) -> np.ndarray:
        """Relative token frequencies over the atlas's stored sequences (the background
        against which a neuron's favourite tokens are judged), add-one smoothed."""
        counts = np.ones(vocab_size, dtype=np.float64)
        for ids in self.sequences.values():
            np.add.at(counts, ids[self.start:][ids[self.start:] < vocab_size], 1)
        return counts / counts.sum()

    def layer(self, layer: int, neurons: set[int] | None = None) -> Iterator[tuple[int, dict[str, list]]]:
        """(neuron, rows by kind) for one layer, in neuron order."""
        rows: dict[int, dict[str, list]] = {}
        for neuron, kind, rank, seq, acts in records.exemplar_rows(self.store, layer):
            if neurons is None or neuron in neurons:
                rows.setdefault(neuron, {}).setdefault(kind, []).append((rank, seq, acts))
        yield from sorted(rows.items())

    def logit_effects(self, layer: int) -> dict[int, tuple[list, list]]:
        import json
        out = {}
        for neuron, promoted, suppressed in records.output_token_rows(self.store, layer):
            out[neuron] = (json.loads(promoted) if promoted else [], json.loads(suppressed) if suppressed else [])
        return out

    def build(self, layer: int, neuron: int, polarity: str, by_kind: dict[str, list],
              effects: tuple[list, list] | None = None) -> NeuronExemplars:
        sign = 1.0 if polarity == "+" else -1.0
        out = NeuronExemplars(layer, neuron, polarity)
        for rank, seq, acts in by_kind.get(polarity, []):
            excerpt = self._excerpt(seq, acts, sign)
            if excerpt is not None:
                (out.shown if rank % 2 == 0 else out.held_out).append(excerpt)
        for _, seq, acts in by_kind.get("r", []):
            excerpt = self._excerpt(seq, acts, sign)
            if excerpt is not None:
                out.held_out_random.append(excerpt)
        scoring = {e.seq_index for e in out.scoring}
        out.shown = [e for e in out.shown if e.seq_index not in scoring]    # a random pick may repeat a top one
        for rank, seq, acts in by_kind.get("-" if polarity == "+" else "+", []):
            if rank % 2 == 0 and int(seq) not in scoring:
                excerpt = self._excerpt(seq, acts, sign)
                if excerpt is not None:
                    out.contrast.append(excerpt)
        if effects is not None:
            promoted, suppressed = effects
            if polarity == "-":   # a negative activation writes the opposite direction
                promoted, suppressed = suppressed, promoted
            out.promoted = [(int(t), float(v)) for t, v in promoted]
            out.suppressed = [(int(t), float(v)) for t, v in suppressed]
        return out

    def _excerpt(self, seq: int, acts: bytes, sign: float) -> Excerpt | None:
        ids = self.sequences.get(int(seq))
        if ids is None:
            return None
        values = np.frombuffer(acts, dtype=np.float16).astype(np.float32) * sign
        return Excerpt(int(seq), ids, values, self.start)
