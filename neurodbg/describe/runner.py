"""`describe`: explain and score every neuron (both polarities) of an atlas.

Resumable: each finished (neuron, polarity, explainer) is marked in the
database in the same transaction as its descriptions, and a rerun skips it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurodbg.atlas import descriptions, records
from neurodbg.atlas.store import AtlasStore
from neurodbg.describe.detection import METHODS, score_methods
from neurodbg.describe.exemplars import POLARITIES, ExemplarReader
from neurodbg.describe.explainers import LLMOptions
from neurodbg.describe.explanation import Explainer, Explanation, Simulator
from neurodbg.describe.stat_explainer import Background, build_background
from neurodbg.errors import NeurodbgError
from neurodbg.progress import RateProgress


@dataclass
class DescribeSummary:
    explainer: str
    described: int                 # (neuron, polarity) pairs done in this run
    skipped: int                   # already done before
    seconds: float
    scores: list[float] = field(default_factory=list)
    extra: list[dict[str, Any]] = field(default_factory=list)      # every candidate's scores (detection.score_methods)

    @property
    def rate(self) -> float:
        return self.described / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        s = np.array(self.scores) if self.scores else np.array([np.nan])
        return {"explainer": self.explainer, "described": self.described, "skipped": self.skipped,
                "seconds": round(self.seconds, 2), "per_second": round(self.rate, 1),
                "median_score": None if not self.scores else round(float(np.median(s)), 4),
                "share_ge_0.5": None if not self.scores else round(float((s >= 0.5).mean()), 4),
                "share_ge_0.8": None if not self.scores else round(float((s >= 0.8).mean()), 4),
                **({"scores": summarise(self.extra)} if self.extra else {})}


def _medians(rows: list[dict[str, Any]], method: str) -> dict[str, float | None]:
    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return round(float(np.median(known)), 4) if known else None

    if method == "simulation":
        return {"median": median([r.get(method) for r in rows])}
    return {"median_auroc": median([(r.get(method) or {}).get("auroc") for r in rows]),
            "median_balanced_accuracy": median([(r.get(method) or {}).get("balanced_accuracy") for r in rows])}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of each scoring method over described candidates, each beside the same method's
    median with a shuffled (another neuron's) description."""
    methods = [m for m in METHODS if any(m in r for r in rows)]
    shuffled = [r["shuffled"] for r in rows if r.get("shuffled")]
    return {m: {**_medians(rows, m), "shuffled": _medians(shuffled, m) if shuffled else None} for m in methods}


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise NeurodbgError(f"unknown scoring method {bad[0]!r}; choose from {', '.join(METHODS)}")
    return tuple(m for m in METHODS if m in methods or m == "simulation")


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


def describe(store: AtlasStore, explainer: Explainer, simulator: Simulator, *, reader: ExemplarReader | None = None,
             layers: Sequence[int] | None = None, neurons: Iterable[int] | None = None,
             polarities: Sequence[str] = POLARITIES, progress: bool = True, chunk: int = 512,
             scoring: Sequence[str] = METHODS, baselines: bool = True) -> DescribeSummary:
    """Explain, simulate and score; store every candidate. Returns what this run did.

    `scoring`: the methods besides the simulation score (detection, fuzzing; see `detection`).
    `baselines`: also score each neuron-polarity with the previous neuron's description of the
    same polarity in the same layer (a shuffled description), for the `shuffled` figures."""
    methods = check_methods(scoring)
    records.require_complete(store)
    reader = reader or ExemplarReader(store)
    available = records.layers(store)
    chosen = list(available) if layers is None else list(layers)
    missing = [layer for layer in chosen if layer not in available]
    if missing:
        raise NeurodbgError(f"layers {missing} are not in this atlas (it has {available[0]}-{available[-1]})")
    wanted = None if neurons is None else set(neurons)
    width = records.width(store)
    if wanted is not None and (bad := [n for n in wanted if not 0 <= n < width]):
        raise NeurodbgError(f"neuron indices {sorted(bad)[:5]} are out of range (0-{width - 1})")
    finished = descriptions.done(store, explainer.name)
    widths = records.layer_widths(store)
    total = sum(widths[layer] if wanted is None else sum(1 for n in wanted if n < widths[layer])
                for layer in chosen) * len(polarities)
    skipped = sum(1 for key in finished if key[0] in chosen and (wanted is None or key[1] in wanted)
                  and key[2] in polarities)
    summary = DescribeSummary(explainer.name, 0, skipped, 0.0)
    start = time.perf_counter()
    pending: list[Explanation] = []
    marks: list[tuple[int, int, str]] = []
    with RateProgress(progress, f"describe ({explainer.name})", total, done=skipped) as bar:
        for layer in chosen:
            effects = reader.logit_effects(layer)
            previous: dict[str, Explanation] = {}          # the last description of each polarity here
            for neuron, by_kind in reader.layer(layer, wanted):
                for polarity in polarities:
                    if (layer, neuron, polarity) in finished:
                        continue
                    ex = reader.build(layer, neuron, polarity, by_kind, effects.get(neuron))
                    seed = layer * 100_003 + neuron * 2 + (polarity == "-")
                    other = previous.get(polarity) if baselines else None
                    shuffled = (score_methods(simulator.simulate(other, ex.scoring), ex.scoring, methods, seed=seed)
                                if other is not None else None)
                    for candidate in explainer.explain(ex):
                        scores = score_methods(simulator.simulate(candidate, ex.scoring), ex.scoring, methods,
                                            seed=seed)
                        candidate.score = scores["simulation"]
                        candidate.simulator = simulator.name
                        candidate.extra["scores"] = {**scores, "shuffled": shuffled}
                        pending.append(candidate)
                        summary.extra.append(candidate.extra["scores"])
                        if candidate.score is not None:
                            summary.scores.append(candidate.score)
                        previous[polarity] = candidate
                    marks.append((layer, neuron, polarity))
                    summary.described += 1
                    bar.advance(1)
                    if len(marks) >= chunk:
                        descriptions.save(store, pending, marks, explainer.name)
                        pending, marks = [], []
        descriptions.save(store, pending, marks, explainer.name)
    summary.seconds = time.perf_counter() - start
    return summary


def describe_atlas(atlas: str | Path | AtlasStore, explainer: str = "stat", *,
                   options: LLMOptions | None = None, layers: Sequence[int] | None = None,
                   neurons: Iterable[int] | None = None, polarities: Sequence[str] = POLARITIES,
                   embed: bool = True, progress: bool = True, scoring: Sequence[str] = METHODS,
                   baselines: bool = True) -> dict[str, Any]:
    """The whole job behind `neurodbg describe`: load the atlas's own model, build the explainer
    (`stat`, `local:MODEL`, `openai:MODEL`) and its simulator, describe, and embed the new
    descriptions for search. Returns the run's summary (with `embedded`)."""
    from neurodbg.atlas.binding import model_for_atlas
    from neurodbg.describe.explainers import make

    bad = [p for p in polarities if p not in POLARITIES]
    if bad or not polarities:
        raise NeurodbgError(f"polarities are + and - (got {bad[0] if bad else 'none'!r})")
    check_methods(scoring)
    store = atlas if isinstance(atlas, AtlasStore) else AtlasStore.open(atlas)
    try:
        records.require_complete(store)
        if records.is_image_atlas(store):
            reader, chosen, simulator = _image_explainer(store, explainer)
        else:
            model = model_for_atlas(store, progress=progress)
            reader = ExemplarReader(store)
            chosen, simulator = make(explainer, background(store, model.tokenizer, reader), options)
        data = describe(store, chosen, simulator, reader=reader, layers=layers, neurons=neurons,
                        polarities=polarities, progress=progress, scoring=scoring, baselines=baselines).to_dict()
        if embed:
            from neurodbg.search.atlas_search import ensure_embeddings

            data["embedded"] = ensure_embeddings(store, progress=progress)
        return data
    finally:
        if store is not atlas:
            store.close()


def _image_explainer(store: AtlasStore, explainer: str) -> tuple[ExemplarReader, Explainer, Simulator]:
    from neurodbg.describe.image_explainer import ImageExemplarReader, ImageExplainer, ImageSimulator

    if explainer != "stat":
        raise NeurodbgError(f"an image atlas is described by the statistical explainer (stat), not {explainer!r}: "
                            "the language-model explainers read text exemplars")
    reader = ImageExemplarReader(store)
    return reader, ImageExplainer(reader), ImageSimulator()
