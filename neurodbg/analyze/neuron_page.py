"""Everything known about one neuron, in one JSON-able dict: statistics, tail
quantiles, the histogram with its bin edges, promoted and suppressed tokens,
exemplars of both polarities with their tokens and per-token activations, and
its descriptions (the best per polarity, or every scored candidate)."""

from __future__ import annotations

import json
from typing import Any

from neurodbg.atlas import descriptions, records
from neurodbg.atlas.store import AtlasStore
from neurodbg.model import Model


def histogram_span(store: AtlasStore, counts: list[int]) -> dict[str, Any]:
    """The non-empty span of the histogram with its edges (the scan's shared asinh-spaced bins)."""
    edges = json.loads(store.get("hist_edges") or "[]")
    nonzero = [i for i, c in enumerate(counts) if c]
    if not nonzero or len(edges) != len(counts) + 1:
        return {"edges": [], "counts": []}
    lo, hi = nonzero[0], nonzero[-1] + 1
    return {"edges": [round(e, 6) for e in edges[lo:hi + 1]], "counts": counts[lo:hi]}


def neuron_page(store: AtlasStore, model: Model, layer: int, neuron: int, *, candidates: bool = False,
                exemplars: int = 20) -> dict[str, Any]:
    decode = model.tokenizer.decode if model.tokenizer is not None else None
    rec = records.neuron(store, layer, neuron, decode=decode)
    out = rec.to_dict()
    out.pop("hist")
    out["histogram"] = histogram_span(store, rec.hist)
    for side in ("promoted", "suppressed"):
        pairs = out[side] or []
        out[side] = [{"token": decode([int(i)]) if decode else str(int(i)), "id": int(i), "value": round(v, 5)}
                     for i, v in pairs]
    out["exemplars"] = {kind: [{"rank": e.rank, "value": e.value, "tokens": e.tokens,
                                "acts": [round(a, 4) for a in e.acts]}
                               for e in items[:exemplars]] for kind, items in rec.exemplars.items()}
    found = descriptions.for_neuron(store, layer, neuron)
    scores = descriptions.scores_for(store, layer, neuron)
    out["descriptions"] = {}
    for polarity in ("+", "-"):
        mine = [{**e.to_dict(), "scores": scores.get((e.polarity, e.explainer, e.candidate))}
                for e in found if e.polarity == polarity]
        out["descriptions"][polarity] = {"best": mine[0] if mine else None, "count": len(mine),
                                         "candidates": mine if candidates else None}
    return out
