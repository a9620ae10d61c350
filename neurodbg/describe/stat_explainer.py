"""The statistical explainer: no language model, just counting.

From the shown exemplars of one polarity it finds the tokens the neuron fires
on, weighted by how far above their corpus frequency they occur, the token class
or text topic they share (when clearly over-represented), the token that
usually precedes them, and what the neuron writes to the output. The result is
a sentence plus a `spec` (token weights, class weight, baseline) that the
statistical simulator turns back into per-token predictions."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from neurodbg.describe.exemplars import NeuronExemplars
from neurodbg.describe.explanation import Explanation
from neurodbg.describe.token_classes import TOKEN_CLASSES, excerpt_topics, token_class

STRONG = 0.5          # a position is "active" at >= half the neuron's peak in the shown exemplars
MAX_TOKENS = 24       # token weights kept in the spec
NAMED_TOKENS = 6      # tokens quoted in the sentence


@dataclass
class Background:
    """Corpus-level facts the explainer compares against."""
    frequencies: np.ndarray          # relative frequency of each token id
    classes: np.ndarray              # class index per token id (-1: none)
    class_rates: np.ndarray          # share of corpus tokens in each class
    topic_rates: dict[str, float]    # share of corpus excerpts showing each topic
    decode: Callable[[int], str]


def build_background(frequencies: np.ndarray, decode: Callable[[int], str],
                     excerpts: Sequence[np.ndarray]) -> Background:
    names = list(TOKEN_CLASSES)
    classes = np.full(len(frequencies), -1, dtype=np.int64)
    for token in np.flatnonzero(frequencies > frequencies.min()):   # tokens the corpus actually has
        name = token_class(decode(int(token)))
        if name is not None:
            classes[token] = names.index(name)
    rates = np.array([frequencies[classes == i].sum() for i in range(len(names))])
    topic_counts: dict[str, int] = {}
    for ids in excerpts:
        for topic in excerpt_topics(_words(ids, decode)):
            topic_counts[topic] = topic_counts.get(topic, 0) + 1
    n = max(len(excerpts), 1)
    return Background(frequencies, classes, rates, {t: c / n for t, c in topic_counts.items()}, decode)


def _words(ids: np.ndarray, decode: Callable[[int], str]) -> set[str]:
    return {decode(int(t)).strip() for t in ids}


def quote(text: str) -> str:
    shown = text.replace("\n", "\\n").replace("\t", "\\t")
    return f"“{shown}”"


class StatisticalExplainer:
    name = "stat"

    def __init__(self, background: Background) -> None:
        self.bg = background

    def explain(self, ex: NeuronExemplars) -> list[Explanation]:
        text, spec = self._describe(ex)
        return [Explanation(ex.layer, ex.neuron, ex.polarity, self.name, 0, text, spec)]

    def _describe(self, ex: NeuronExemplars) -> tuple[str, dict]:
        verb = "Fires on" if ex.polarity == "+" else "Goes negative on"
        peak = max((e.peak for e in ex.shown), default=0.0)
        if not ex.shown or peak <= 0:
            return (f"No clear {'positive' if ex.polarity == '+' else 'negative'} activations in the corpus.",
                    {"tokens": {}, "class": None, "class_weight": 0.0, "baseline": 0.0})
        ids = np.concatenate([e.ids[e.start:] for e in ex.shown])
        prev = np.concatenate([e.ids[e.start - 1:-1] if e.start else np.r_[-1, e.ids[:-1]] for e in ex.shown])
        acts = np.clip(np.concatenate([e.acts[e.start:] for e in ex.shown]) / peak, 0.0, 1.0)
        strong = acts >= STRONG
        n_strong = max(int(strong.sum()), 1)

        # per token id: mean normalised activation where it occurs, and lift of its strong share
        uniq, inverse = np.unique(ids, return_inverse=True)
        occurrences = np.bincount(inverse)
        mean_act = np.bincount(inverse, weights=acts) / occurrences
        strong_count = np.bincount(inverse, weights=strong.astype(np.float64))
        lift = (strong_count / n_strong) / self.bg.frequencies[uniq]
        key = strong_count * mean_act * np.log2(1.0 + lift)
        order = [i for i in np.argsort(-key) if strong_count[i] > 0][:MAX_TOKENS]
        weights = {int(uniq[i]): round(float(mean_act[i]), 3) for i in order}
        baseline = float(acts[~np.isin(ids, list(weights))].mean()) if (~np.isin(ids, list(weights))).any() else 0.0

        # a token class shared by most strong positions, and rare in the corpus
        cls, cls_weight = None, baseline
        classes = self.bg.classes[ids]
        if strong.any():
            shares = np.bincount(classes[strong] + 1, minlength=len(TOKEN_CLASSES) + 1)[1:] / n_strong
            best = int(np.argmax(shares))
            if shares[best] >= 0.6 and shares[best] >= 2.5 * self.bg.class_rates[best]:
                cls = list(TOKEN_CLASSES)[best]
                cls_weight = float(acts[classes == best].mean())

        # a preceding token shared by the strong positions
        after = None
        if strong.sum() >= 3:
            p_uniq, p_count = np.unique(prev[strong], return_counts=True)
            j = int(np.argmax(p_count))
            if p_uniq[j] >= 0 and p_count[j] / n_strong >= 0.5 and p_count[j] >= 3:
                after = int(p_uniq[j])

        # a topic most of the shown excerpts share, clearly more than the corpus does
        topics: dict[str, int] = {}
        for e in ex.shown:
            for t in excerpt_topics(_words(e.ids, self.bg.decode)):
                topics[t] = topics.get(t, 0) + 1
        topic = None
        if topics:
            t, count = max(topics.items(), key=lambda kv: kv[1])
            share = count / len(ex.shown)
            if share >= 0.6 and share >= 1.5 * self.bg.topic_rates.get(t, 0.0):
                topic = t

        named = list(weights)
        if cls:   # quote the class's own members first
            index = list(TOKEN_CLASSES).index(cls)
            named = sorted(named, key=lambda t: self.bg.classes[t] != index)
        names = [quote(self.bg.decode(t)) for t in named[:NAMED_TOKENS]]
        parts = [verb]
        if cls:
            parts.append(f"{cls} such as {', '.join(names)}" if names else cls)
        else:
            parts.append(f"the tokens {', '.join(names)}" if names else "scattered tokens")
        sentence = " ".join(parts)
        if after is not None:
            sentence += f", mostly right after {quote(self.bg.decode(after))}"
        if topic:
            sentence += f", in {topic}"
        sentence += "."
        if ex.promoted:
            sentence += " Promotes " + ", ".join(quote(self.bg.decode(t)) for t, _ in ex.promoted[:4])
            if ex.suppressed:
                sentence += "; suppresses " + ", ".join(quote(self.bg.decode(t)) for t, _ in ex.suppressed[:4])
            sentence += "."
        after_weight = float(acts[prev == after].mean()) if after is not None else 0.0
        spec = {"tokens": weights, "class": cls, "class_weight": round(cls_weight, 3),
                "baseline": round(baseline, 3), "after": after, "after_weight": round(after_weight, 3),
                "topic": topic}
        return re.sub(r"\s+", " ", sentence).strip(), spec
