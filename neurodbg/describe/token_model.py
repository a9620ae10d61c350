"""The statistical explainer's machine-readable description: a small additive model of
a neuron's activation at each position, fitted to the exemplars the explainer sees.

    activation ≈ bias + token[id] + form[word form] + class[token class]
                 + after[word form of the previous token] + position[bucket]

A word form is a token's text stripped and lower-cased (" The", "the" and "THE"
share one), so what is learnt on one spelling carries to the others; the
previous token's form is the context that mid-layer neurons respond to; the
position buckets catch neurons that behave differently at a text's start.

It is fitted as ridge regression (L2 penalty `ALPHA`) by block coordinate descent
(backfitting): each block's weights are the penalised mean residual of the
positions that carry them, which converges to the ridge solution and costs a few
`bincount`s per pass. Then only the `KEEP` largest weights of the token, form
and after blocks are kept and the model is refitted with those, so a
description stays small (under 200 numbers, three significant digits). The training data are the shown
exemplars and the other polarity's shown exemplars (`NeuronExemplars.contrast`),
whose targets are clipped at -`CONTRAST_CLIP` × the shown peak: what the
neuron does far on the other side is not what this polarity describes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurodbg.describe.exemplars import Excerpt

MODEL = "linear-context"
POSITION_EDGES = (2, 3, 4, 8, 16)        # buckets: position 1, 2, 3, 4-7, 8-15, 16+
ALPHA = 2.0
PASSES = 3
CONTRAST_CLIP = 0.2
KEEP = {"tokens": 96, "forms": 48, "after": 24}
NO_CLASS = "other"


@dataclass(frozen=True)
class Vocabulary:
    """What the model's blocks index: per token id its word form and token class."""
    forms: np.ndarray            # int64 [vocab]: index into form_names
    form_names: list[str]
    classes: np.ndarray          # int64 [vocab]: index into class_names, -1 for none
    class_names: list[str]
    form_index: dict[str, int] = field(default_factory=dict)     # form name -> index (filled if empty)

    def __post_init__(self) -> None:
        if not self.form_index:
            self.form_index.update({name: i for i, name in enumerate(self.form_names)})


def word_form(text: str) -> str:
    return text.strip().lower()


def position_bucket(positions: np.ndarray) -> np.ndarray:
    return np.digitize(positions, POSITION_EDGES)


@dataclass
class Design:
    """Per counted position of some excerpts: the index each block reads."""
    tokens: np.ndarray
    forms: np.ndarray
    after: np.ndarray            # the previous token's form; -1 at position 0 (nothing before)
    classes: np.ndarray          # class index + 1 (0: no class)
    positions: np.ndarray        # bucket


def design(excerpts: Sequence[Excerpt], vocab: Vocabulary) -> Design:
    size = len(vocab.forms)
    ids, prev, pos = [], [], []
    for e in excerpts:
        t = np.clip(e.ids[e.start:].astype(np.int64), 0, size - 1)
        before = np.r_[-1, e.ids[:-1].astype(np.int64)][e.start:]
        ids.append(t)
        prev.append(before)
        pos.append(np.arange(e.start, len(e.ids)))
    t = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    p = np.concatenate(prev) if prev else np.zeros(0, np.int64)
    after = np.where(p >= 0, vocab.forms[np.clip(p, 0, size - 1)], -1)
    return Design(t, vocab.forms[t], after, vocab.classes[t] + 1,
                  position_bucket(np.concatenate(pos) if pos else np.zeros(0, np.int64)))


def _backfit(blocks: list[np.ndarray], sizes: list[int], y: np.ndarray,
             frozen: list[np.ndarray | None]) -> tuple[float, list[np.ndarray]]:
    """Ridge by block coordinate descent; `frozen[b]` marks weights held at zero."""
    bias = float(y.mean())
    residual = y - bias
    weights = [np.zeros(size) for size in sizes]
    counts = [np.bincount(idx, minlength=size) + ALPHA for idx, size in zip(blocks, sizes, strict=True)]
    for _ in range(PASSES):
        for idx, size, w, n, off in zip(blocks, sizes, weights, counts, frozen, strict=True):
            residual += w[idx]
            w[:] = np.bincount(idx, weights=residual, minlength=size) / n
            if off is not None:
                w[off] = 0.0
            residual -= w[idx]
        shift = float(residual.mean())
        bias += shift
        residual -= shift
    return bias, weights


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def fit(excerpts: Sequence[Excerpt], targets: np.ndarray, vocab: Vocabulary) -> dict[str, Any]:
    """Fit the model to `targets` (one per counted position of `excerpts`); returns the spec."""
    d = design(excerpts, vocab)
    y = np.asarray(targets, dtype=np.float64)
    if len(y) == 0:
        return empty_spec()
    # compact each sparse block to the values present, so every bincount is small
    blocks, sizes, values = [], [], []
    for name in ("tokens", "forms", "after"):
        uniq, inverse = np.unique(getattr(d, name), return_inverse=True)
        blocks.append(inverse)
        sizes.append(len(uniq))
        values.append(uniq)
    blocks += [d.classes, d.positions]
    sizes += [len(vocab.class_names) + 1, len(POSITION_EDGES) + 1]
    _, weights = _backfit(blocks, sizes, y, [None] * 5)
    frozen: list[np.ndarray | None] = []
    for b, name in enumerate(("tokens", "forms", "after")):
        off = np.ones(sizes[b], dtype=bool)
        off[np.argsort(-np.abs(weights[b]))[:KEEP[name]]] = False
        off[values[b] < 0] = True                 # "nothing before" is no form
        frozen.append(off)
    bias, weights = _backfit(blocks, sizes, y, [*frozen, None, None])
    tokens = {str(int(values[0][i])): _round(w) for i, w in enumerate(weights[0]) if w != 0.0}
    forms = {vocab.form_names[int(values[1][i])]: _round(w) for i, w in enumerate(weights[1]) if w != 0.0}
    after = {vocab.form_names[int(values[2][i])]: _round(w) for i, w in enumerate(weights[2]) if w != 0.0}
    classes = {([NO_CLASS, *vocab.class_names])[i]: _round(w) for i, w in enumerate(weights[3]) if w != 0.0}
    return {"model": MODEL, "bias": _round(bias), "tokens": tokens, "forms": forms, "after": after,
            "classes": classes, "positions": [_round(w) for w in weights[4]], "position_edges": list(POSITION_EDGES)}


def empty_spec() -> dict[str, Any]:
    return {"model": MODEL, "bias": 0.0, "tokens": {}, "forms": {}, "after": {}, "classes": {},
            "positions": [0.0] * (len(POSITION_EDGES) + 1), "position_edges": list(POSITION_EDGES)}


@dataclass(frozen=True)
class Tables:
    """A spec as dense lookup tables over the vocabulary."""
    bias: float
    token: np.ndarray            # token + form + class weight of each id
    after: np.ndarray            # weight of each id as the previous token
    positions: np.ndarray
    edges: tuple[int, ...]


def tables(spec: dict[str, Any], vocab: Vocabulary) -> Tables:
    if spec.get("model") != MODEL:
        raise ValueError("this description was made by an older statistical explainer; describe the atlas again "
                         "to simulate it")
    index = vocab.form_index
    size = len(vocab.forms)
    form_w = np.zeros(len(vocab.form_names))
    for name, w in spec["forms"].items():
        if name in index:
            form_w[index[name]] = w
    after_w = np.zeros(len(vocab.form_names))
    for name, w in spec["after"].items():
        if name in index:
            after_w[index[name]] = w
    class_w = np.zeros(len(vocab.class_names) + 1)
    names = [NO_CLASS, *vocab.class_names]
    for name, w in spec["classes"].items():
        if name in names:
            class_w[names.index(name)] = w
    token = form_w[vocab.forms] + class_w[vocab.classes + 1]
    for key, w in spec["tokens"].items():
        if 0 <= int(key) < size:
            token[int(key)] += w
    return Tables(float(spec["bias"]), token, after_w[vocab.forms], np.asarray(spec["positions"], dtype=np.float64),
                  tuple(spec["position_edges"]))


def predict(t: Tables, ids: np.ndarray) -> np.ndarray:
    """The model's value at every position of one sequence (position 0 has nothing before it)."""
    ids = np.clip(ids.astype(np.int64), 0, len(t.token) - 1)
    out = t.bias + t.token[ids] + t.positions[np.digitize(np.arange(len(ids)), t.edges)]
    out[1:] += t.after[ids[:-1]]
    return out
