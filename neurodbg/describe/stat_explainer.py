"""The statistical explainer: no language model, just counting and a small fit.

From the shown exemplars of one polarity (and the other polarity's, as
contrast) it fits the additive token-and-context model of `token_model` —
weights for tokens, their word forms and classes, the previous token and the
position — which is the description's machine-readable `spec`; the statistical
simulator turns it back into per-token predictions. The sentence says what the
model and the exemplars say: the tokens with the largest weights among those the
neuron fires on, the token class or text topic they share (when clearly
over-represented against the corpus), the previous token that raises it most,
whether it responds at a text's start, and what it writes to the output."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from neurodbg.describe import token_model
from neurodbg.describe.exemplars import NeuronExemplars
from neurodbg.describe.explanation import Explanation
from neurodbg.describe.token_classes import TOKEN_CLASSES, excerpt_topics, token_class

STRONG = 0.5          # a position is "active" at >= half the neuron's peak in the shown exemplars
NAMED_TOKENS = 6      # tokens quoted in the sentence
CONTEXT_SHARE = 0.5   # a previous token or the text's start is named when its weight is this share of the top token's


@dataclass
class Background:
    """Corpus-level facts the explainer compares against."""
    frequencies: np.ndarray          # relative frequency of each token id
    classes: np.ndarray              # class index per token id (-1: none)
    class_rates: np.ndarray          # share of corpus tokens in each class
    topic_rates: dict[str, float]    # share of corpus excerpts showing each topic
    decode: Callable[[int], str]
    vocab: token_model.Vocabulary


def build_background(frequencies: np.ndarray, decode: Callable[[int], str],
                     excerpts: Sequence[np.ndarray]) -> Background:
    names = list(TOKEN_CLASSES)
    classes = np.full(len(frequencies), -1, dtype=np.int64)
    for token in np.flatnonzero(frequencies > frequencies.min()):   # tokens the corpus actually has
        name = token_class(decode(int(token)))
        if name is not None:
            classes[token] = names.index(name)
    rates = np.array([frequencies[classes == i].sum() for i in range(len(names))])
    form_of: dict[str, int] = {}
    forms = np.array([form_of.setdefault(token_model.word_form(decode(t)), len(form_of))
                      for t in range(len(frequencies))], dtype=np.int64)
    vocab = token_model.Vocabulary(forms, list(form_of), classes, names)
    topic_counts: dict[str, int] = {}
    for ids in excerpts:
        for topic in excerpt_topics(_words(ids, decode)):
            topic_counts[topic] = topic_counts.get(topic, 0) + 1
    n = max(len(excerpts), 1)
    return Background(frequencies, classes, rates, {t: c / n for t, c in topic_counts.items()}, decode, vocab)


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
                    token_model.empty_spec())
        train = list(ex.shown) + list(ex.contrast)
        targets = np.concatenate([e.acts[e.start:] for e in ex.shown]
                                 + [np.maximum(e.acts[e.start:], -token_model.CONTRAST_CLIP * peak)
                                    for e in ex.contrast])
        spec = token_model.fit(train, targets, self.bg.vocab)
        model = token_model.tables(spec, self.bg.vocab)

        ids = np.concatenate([e.ids[e.start:] for e in ex.shown])
        acts = np.clip(np.concatenate([e.acts[e.start:] for e in ex.shown]) / peak, 0.0, 1.0)
        strong = acts >= STRONG
        n_strong = max(int(strong.sum()), 1)

        # the tokens it fires on, by their weight in the model
        fired = np.unique(ids[strong])
        fired = fired[model.token[fired] > 0]
        named = [int(t) for t in fired[np.argsort(-model.token[fired], kind="stable")]]
        top_weight = float(model.token[named[0]]) if named else 0.0

        # a token class shared by most strong positions, and rare in the corpus
        cls = None
        classes = self.bg.classes[ids]
        if strong.any():
            shares = np.bincount(classes[strong] + 1, minlength=len(TOKEN_CLASSES) + 1)[1:] / n_strong
            best = int(np.argmax(shares))
            if shares[best] >= 0.6 and shares[best] >= 2.5 * self.bg.class_rates[best]:
                cls = list(TOKEN_CLASSES)[best]

        # the previous token that raises it most, and a text's start
        after = max(spec["after"].items(), key=lambda kv: kv[1], default=None)
        after_text = after[0] if after and top_weight > 0 and after[1] >= CONTEXT_SHARE * top_weight else None
        positions = np.asarray(spec["positions"])
        at_start = top_weight > 0 and positions[:2].max() - np.median(positions) >= CONTEXT_SHARE * top_weight

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
        if after_text is not None:
            sentence += f", most after “{after_text}”" if after_text else ", most after a line break or space"
        if at_start:
            sentence += ", and at the start of a text"
        if topic:
            sentence += f", in {topic}"
        sentence += "."
        if ex.promoted:
            sentence += " Promotes " + ", ".join(quote(self.bg.decode(t)) for t, _ in ex.promoted[:4])
            if ex.suppressed:
                sentence += "; suppresses " + ", ".join(quote(self.bg.decode(t)) for t, _ in ex.suppressed[:4])
            sentence += "."
        spec["topic"] = topic
        return re.sub(r"\s+", " ", sentence).strip(), spec
