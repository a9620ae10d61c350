"""`describe`: explain and score every neuron (both polarities) of an atlas.

Resumable: each finished (neuron, polarity, explainer) is marked in the
database in the same transaction as its descriptions, and a rerun skips it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurodbg.atlas.records import require_complete
from neurodbg.atlas.store import AtlasStore
from neurodbg.describe import storage
from neurodbg.describe.exemplars import POLARITIES, ExemplarReader
from neurodbg.describe.explanation import Explainer, Explanation, Simulator
from neurodbg.describe.scoring import score
from neurodbg.describe.stat_explainer import Background, build_background
from neurodbg.errors import NeurodbgError
from neurodbg.scan.progress import ScanProgress


@dataclass
class DescribeSummary:
    explainer: str
    described: int                 # (neuron, polarity) pairs done in this run
    skipped: int                   # already done before
    seconds: float
    scores: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.described / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        s = np.array(self.scores) if self.scores else np.array([np.nan])
        return {"explainer": self.explainer, "described": self.described, "skipped": self.skipped,
                "seconds": round(self.seconds, 2), "per_second": round(self.rate, 1),
                "median_score": None if not self.scores else round(float(np.median(s)), 4),
                "share_ge_0.5": None if not self.scores else round(float((s >= 0.5).mean()), 4),
                "share_ge_0.8": None if not self.scores else round(float((s >= 0.8).mean()), 4)}


def vocabulary(tokenizer: Any) -> Callable[[int], str]:
    """A fast id -> text decoder (every id decoded once, up front)."""
    size = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(size)])

    def decode(token: int) -> str:
        return texts[token] if 0 <= token < size else f"<{token}>"

    return decode


def background(store: AtlasStore, tokenizer: Any, reader: ExemplarReader | None = None) -> Background:
    reader = reader or ExemplarReader(store)
    decode = vocabulary(tokenizer)
    return build_background(reader.token_frequencies(len(tokenizer)), decode, list(reader.sequences.values()))


def atlas_layers(store: AtlasStore) -> list[int]:
    return [int(r[0]) for r in store.conn.execute("SELECT DISTINCT layer FROM neurons ORDER BY layer")]


def describe(store: AtlasStore, explainer: Explainer, simulator: Simulator, *, reader: ExemplarReader | None = None,
             layers: Sequence[int] | None = None, neurons: Iterable[int] | None = None,
             polarities: Sequence[str] = POLARITIES, progress: bool = True, chunk: int = 512) -> DescribeSummary:
    """Explain, simulate and score; store every candidate. Returns what this run did."""
    require_complete(store)
    reader = reader or ExemplarReader(store)
    available = atlas_layers(store)
    chosen = list(available) if layers is None else list(layers)
    missing = [layer for layer in chosen if layer not in available]
    if missing:
        raise NeurodbgError(f"layers {missing} are not in this atlas (it has {available[0]}-{available[-1]})")
    wanted = None if neurons is None else set(neurons)
    width = int(store.conn.execute("SELECT MAX(neuron) + 1 FROM neurons").fetchone()[0])
    if wanted is not None and (bad := [n for n in wanted if not 0 <= n < width]):
        raise NeurodbgError(f"neuron indices {sorted(bad)[:5]} are out of range (0-{width - 1})")
    finished = storage.done(store, explainer.name)
    per_layer = width if wanted is None else len(wanted)
    total = len(chosen) * per_layer * len(polarities)
    skipped = sum(1 for key in finished if key[0] in chosen and (wanted is None or key[1] in wanted)
                  and key[2] in polarities)
    summary = DescribeSummary(explainer.name, 0, skipped, 0.0)
    start = time.perf_counter()
    pending: list[Explanation] = []
    marks: list[tuple[int, int, str]] = []
    with ScanProgress(progress, f"describe ({explainer.name})", total, done=skipped) as bar:
        for layer in chosen:
            effects = reader.logit_effects(layer)
            for neuron, by_kind in reader.layer(layer, wanted):
                for polarity in polarities:
                    if (layer, neuron, polarity) in finished:
                        continue
                    ex = reader.build(layer, neuron, polarity, by_kind, effects.get(neuron))
                    for candidate in explainer.explain(ex):
                        predictions = simulator.simulate(candidate, ex.scoring)
                        candidate.score = score(predictions, ex.scoring)
                        candidate.simulator = simulator.name
                        pending.append(candidate)
                        if candidate.score is not None:
                            summary.scores.append(candidate.score)
                    marks.append((layer, neuron, polarity))
                    summary.described += 1
                    bar.advance(1)
                    if len(marks) >= chunk:
                        storage.save(store, pending, marks, explainer.name)
                        pending, marks = [], []
        storage.save(store, pending, marks, explainer.name)
    summary.seconds = time.perf_counter() - start
    return summary
