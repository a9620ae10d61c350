"""Descriptions of an image atlas's neurons, without a language model: what the
neuron's shown images are (their labels, or the model's classes for them, where
clearly over-represented against the corpus) and where in the image it responds
(the centre of its average feature map, in words).

The machine-readable form predicts every position of a held-out image: the weight
of the image's class (its share among the shown images) times the neuron's average
normalised feature map. The score is the Pearson r of that prediction against the
true activations over the held-out images and the random sample, as for text."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from neurodbg.atlas import records
from neurodbg.atlas.store import AtlasStore
from neurodbg.describe.exemplars import Excerpt, ExemplarReader, NeuronExemplars
from neurodbg.describe.explanation import Explanation

NAME = "stat"
MIN_SHARE = 0.3        # a class named in a description holds at least this share of the shown images
MIN_LIFT = 2.0         # ... and is at least this many times as common there as in the corpus
MAX_CLASSES = 3


class ImageExemplarReader(ExemplarReader):
    """Exemplars of an image atlas: an excerpt's positions are the site's feature-map pixels and
    its ids hold the image's class (its label, else the model's class; -1 for neither)."""

    def __init__(self, store: AtlasStore) -> None:
        self.store = store
        self.start = 0
        rows = records.images(store)
        labelled = any(r.label >= 0 for r in rows.values())
        self.class_source = "label" if labelled else "class" if any(r.predicted >= 0 for r in rows.values()) \
            else None
        names = store.get_json("label_names") if labelled else store.get_json("class_names")
        self.class_names: list[str] = list(names or [])
        self.classes = {i: (r.label if labelled else r.predicted) for i, r in rows.items()}
        counts: list[int] = (store.get_json("label_counts") if labelled else None) or []
        total = sum(counts)
        k = max(len(self.class_names), 1)
        # how common each class is in the corpus (the model's classes: assumed even)
        self.base_rate = [c / total for c in counts] if total else [1.0 / k] * k
        self.grids = store.get_json("grids") or {}
        self.layer_site = records.layer_sites(store)
        self.sequences = {}      # no token sequences: excerpts come from the images table

    def _excerpt(self, seq: int, acts: bytes, sign: float) -> Excerpt | None:
        if int(seq) not in self.classes:
            return None
        values = np.frombuffer(acts, dtype=np.float16).astype(np.float32) * sign
        return Excerpt(int(seq), np.full(len(values), self.classes[int(seq)], dtype=np.int32), values, 0)


def _listed(items: list[str], conjunction: str) -> str:
    """'a', 'a or b', 'a, b or c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def _region(mean_map: np.ndarray) -> str | None:
    """The centre of mass of a [rows, cols] map, in words; None for a single position or an even spread."""
    rows, cols = mean_map.shape
    if rows * cols == 1 or mean_map.sum() <= 0:
        return None
    weights = mean_map / mean_map.sum()
    if float(weights.max()) < 1.5 / (rows * cols):
        return "across the whole image"
    y = float((weights.sum(axis=1) * (np.arange(rows) + 0.5)).sum() / rows)
    x = float((weights.sum(axis=0) * (np.arange(cols) + 0.5)).sum() / cols)
    vertical = "upper" if y < 0.4 else "lower" if y > 0.6 else ""
    horizontal = "left" if x < 0.4 else "right" if x > 0.6 else ""
    if not vertical and not horizontal:
        return "in the centre of the image"
    return f"in the {' '.join(w for w in (vertical, horizontal) if w)} part of the image"


class ImageExplainer:
    name = NAME

    def __init__(self, reader: ImageExemplarReader) -> None:
        self.reader = reader

    def explain(self, ex: NeuronExemplars) -> list[Explanation]:
        shown = [e for e in ex.shown if e.peak > 0]
        if len(shown) < 2:
            return []            # nothing drives it this way (a ReLU's lower side: zeros everywhere)
        grid = self.reader.grids.get(self.reader.layer_site.get(ex.layer, ""))
        spec: dict[str, Any] = {"kind": "image", "classes": {}, "map": None}
        lead = "Fires on" if ex.polarity == "+" else "Goes negative on"
        parts = []
        named = self._classes(shown)
        if named:
            spec["classes"] = {str(c): share for c, share, _ in named}
            said = _listed([f"'{self.reader.class_names[c]}'" for c, _, _ in named], "or")
            counts = _listed([str(n) for _, _, n in named], "and")
            source = "labelled" if self.reader.class_source == "label" else "the model calls"
            parts.append(f"{lead} images {source} {said} ({counts} of {len(shown)} shown images)")
        else:
            what = "label" if self.reader.class_source == "label" else "class"
            parts.append(f"{lead} images of no particular {what}" if self.reader.class_source else f"{lead} images")
        mean_map = self._mean_map(shown, ex, grid)
        if mean_map is not None:
            spec["map"] = mean_map.round(4).tolist()
            region = _region(mean_map)
            if region:
                parts.append(f"strongest {region}")
        return [Explanation(ex.layer, ex.neuron, ex.polarity, self.name, 0, ", ".join(parts) + ".", spec)]

    def _classes(self, shown: list[Excerpt]) -> list[tuple[int, float, int]]:
        if self.reader.class_source is None:
            return []
        counts = Counter(int(e.ids[0]) for e in shown if e.ids[0] >= 0)
        out = []
        for cls, n in counts.most_common(MAX_CLASSES):
            share = n / len(shown)
            base = self.reader.base_rate[cls] if cls < len(self.reader.base_rate) else 0.0
            if share >= MIN_SHARE and (base == 0 or share / base >= MIN_LIFT):
                out.append((cls, round(share, 4), n))
        return out

    @staticmethod
    def _mean_map(shown: list[Excerpt], ex: NeuronExemplars, grid: dict[str, Any] | None) -> np.ndarray | None:
        """The shown images' feature maps, each scaled to its peak, averaged ([rows, cols])."""
        length = len(shown[0].acts)
        if length == 1:
            return None
        rows, cols, skip = (grid["rows"], grid["cols"], grid["skip"]) if grid else (1, length, 0)
        maps = [np.clip(e.acts[skip:], 0, None) / e.peak for e in shown]
        return np.mean(maps, axis=0).reshape(rows, cols)


class ImageSimulator:
    """Predicts each position: the weight of the image's class (1 when the description names
    none) times the average feature map at that position."""
    name = "image-stat"

    def simulate(self, explanation: Explanation, excerpts: list[Excerpt]) -> list[np.ndarray]:
        spec = explanation.spec or {}
        classes = {int(k): float(v) for k, v in (spec.get("classes") or {}).items()}
        flat = np.asarray(spec["map"], dtype=np.float32).ravel() if spec.get("map") is not None else None
        out = []
        for e in excerpts:
            weight = classes.get(int(e.ids[0]), 0.0) if classes else 1.0
            spatial = np.ones(len(e.acts), dtype=np.float32)
            if flat is not None:
                spatial[len(e.acts) - len(flat):] = flat
            out.append(weight * spatial)
        return out
