"""The Monitor: one object over a model and its atlas that answers "why did the
model say that?" and "what if we turn these concepts off or up?". The CLI and
the web app only call this."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from neurodbg.analyze import neurons_behind
from neurodbg.analyze.atlas_view import AtlasView
from neurodbg.analyze.attention import AttentionView, attention_patterns, attention_view
from neurodbg.analyze.clusters import Cluster, cluster
from neurodbg.analyze.logit_lens import LensLayer, LensReport, lens_report, logit_lens
from neurodbg.analyze.neuron_page import neuron_page
from neurodbg.analyze.neurons_behind import Mode, NeuronReport
from neurodbg.analyze.prompt import Prompt, from_ids, prepare, prepare_messages, single_token
from neurodbg.analyze.sampling import Sampling
from neurodbg.analyze.steering import Progress, SteeringResult, SteeringSpec, resolve, select, steer
from neurodbg.analyze.streaming import StreamedToken, stream_tokens
from neurodbg.analyze.token_view import Position, generate_view, token_view
from neurodbg.analyze.tuned_lens import TunedLens
from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import NeurodbgError, PromptError
from neurodbg.model import Model
from neurodbg.search.index import Hit
from neurodbg.trace.check import check_interventions
from neurodbg.trace.interventions import Intervention

Text = str | Prompt       # a prompt as text, or one already prepared (from ids or a conversation)


@dataclass
class Analysis:
    prompt: Prompt
    report: NeuronReport
    clusters: list[Cluster]
    hidden_clusters: int = 0        # clusters left out by min_coherence / max_rating

    def to_dict(self) -> dict[str, Any]:
        ids = [f.id for f in self.report.findings]
        return {"tokens": self.prompt.tokens, "template": self.prompt.template, **self.report.to_dict(),
                "clusters": [c.to_dict(ids) for c in self.clusters], "hidden_clusters": self.hidden_clusters}


def visible(clusters: list[Cluster], *, min_coherence: float | None = None,
            max_rating: int | None = None) -> list[Cluster]:
    """The clusters a reader asked to see: coherence >= `min_coherence` (0-1) and, where an LLM rated
    them, rating <= `max_rating` (1-7; the seeds show only clusters rated <= 3)."""
    if min_coherence is not None and not 0.0 <= min_coherence <= 1.0:
        raise NeurodbgError(f"the minimum cluster coherence must be between 0 and 1 (got {min_coherence})")
    if max_rating is not None and not 1 <= max_rating <= 7:
        raise NeurodbgError(f"the maximum cluster rating must be between 1 and 7 (got {max_rating})")
    return [c for c in clusters if (min_coherence is None or c.coherence >= min_coherence)
            and (max_rating is None or c.extra.get("rating") is None or c.extra["rating"] <= max_rating)]


class Monitor:
    def __init__(self, model: Model, atlas: str | Path | AtlasStore | None = None) -> None:
        self.model = model
        store = atlas if isinstance(atlas, AtlasStore) or atlas is None else AtlasStore.open(atlas)
        self.view = AtlasView(store, model) if store is not None else None

    def _need_atlas(self, what: str) -> AtlasView:
        if self.view is None:
            raise NeurodbgError(f"{what} needs an atlas (--atlas DIR)")
        return self.view

    def prompt(self, text: Text, *, chat: bool = False) -> Prompt:
        return text if isinstance(text, Prompt) else prepare(self.model, text, chat=chat)

    def conversation(self, messages: list[dict[str, str]]) -> Prompt:
        """A multi-turn chat, rendered for the assistant's next turn."""
        return prepare_messages(self.model, messages)

    def from_ids(self, ids: list[int], template: list[bool] | None = None) -> Prompt:
        return from_ids(self.model, ids, template)

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 64, k: int = 5, sampling: Sampling | None = None,
               cancelled: Any = lambda: False) -> Iterator[StreamedToken]:
        """Generation one token at a time, greedy or with `sampling` (each with the top-k it was chosen from)."""
        return stream_tokens(self.model, prompt, max_new_tokens=max_new_tokens, k=k, sampling=sampling,
                             cancelled=cancelled)

    def tokens(self, text: Text, *, chat: bool = False, k: int = 5) -> list[Position]:
        return token_view(self.model, self.prompt(text, chat=chat), k=k)

    def generate(self, text: Text, *, chat: bool = False, k: int = 5, max_new_tokens: int = 20,
                 sampling: Sampling | None = None) -> tuple[list[Position], int]:
        """Generate (greedily, or with `sampling`); the token view over prompt and generated tokens, and
        where generation starts."""
        return generate_view(self.model, self.prompt(text, chat=chat), k=k, max_new_tokens=max_new_tokens,
                             sampling=sampling)

    def _target(self, target: str | int) -> int:
        """A target token given as text (exactly one token) or as an id."""
        if isinstance(target, str):
            return single_token(self.model, target)
        vocab = len(self.model.tokenizer) if self.model.tokenizer is not None else 0
        if not 0 <= target < vocab:
            raise PromptError(f"target id {target} is outside the vocabulary (0-{vocab - 1})")
        return target

    def analyze(self, text: Text, *, target: str | int | None = None, position: int | None = None, chat: bool = False,
                mode: Mode = "attribution", top: int = 100, include_template: bool = False,
                rank: Literal["abs", "pos", "neg"] = "abs", level: float = 1e-4, threshold: float = 0.6,
                min_cluster: int = 3, label_with: Any = None, min_coherence: float | None = None,
                max_rating: int | None = None) -> Analysis:
        """Neurons behind `target` as the next token after `position` (default: the last), grouped.
        `min_coherence` and `max_rating` hide clusters (see `visible`); their number is reported."""
        visible([], min_coherence=min_coherence, max_rating=max_rating)       # bad bounds fail before any work
        prompt = self.prompt(text, chat=chat)
        pos = prompt.position(position)
        if target is None:
            top1 = token_view(self.model, prompt, k=1)[pos].top[0]
            target_id = top1[1]
        else:
            target_id = self._target(target)
        if mode == "attribution":
            report = neurons_behind.attribution(self.model, prompt, pos, target_id, top=top,
                                                include_template=include_template, rank=rank)
        elif mode == "activation":
            report = neurons_behind.activation(self.model, prompt, pos, target_id, self._need_atlas("activation mode"),
                                               top=top, include_template=include_template, level=level)
        else:
            raise NeurodbgError(f"unknown mode {mode!r}; choose attribution or activation")
        neurons_behind.describe_findings(report, self.view)
        groups = self.clusters(report, threshold=threshold, min_size=min_cluster)
        if label_with is not None and groups:   # a chat backend (see cluster_labels.chat_backend)
            from neurodbg.analyze.cluster_labels import llm_labels

            llm_labels(groups, [f.description or "" for f in report.findings], label_with)
        shown = visible(groups, min_coherence=min_coherence, max_rating=max_rating)
        return Analysis(prompt, report, shown, len(groups) - len(shown))

    def clusters(self, report: NeuronReport, *, threshold: float = 0.6, min_size: int = 3) -> list[Cluster]:
        if self.view is None or not report.findings:
            return []
        keys = [(f.layer, f.neuron, f.polarity) for f in report.findings]
        texts = [f.description or "" for f in report.findings]
        vectors = self.view.embeddings(keys) if any(texts) else np.zeros((len(keys), 1), dtype=np.float32)
        return cluster(vectors, texts, [f.value for f in report.findings], threshold=threshold, min_size=min_size,
                       scores=[f.score for f in report.findings])

    def steering(self, spec: SteeringSpec | list[SteeringSpec]) -> list[Intervention]:
        """The interventions of one spec, or of several run together (contradictions refused)."""
        return resolve(spec, self._need_atlas("steering"), self.model)

    def steer(self, text: Text, interventions: list[Intervention], *, target: str | int | None = None,
              chat: bool = False, max_new_tokens: int = 20, progress: Progress | None = None) -> SteeringResult:
        prompt = self.prompt(text, chat=chat)
        target_id = self._target(target) if target is not None else None
        return steer(self.model, prompt, interventions, target=target_id, max_new_tokens=max_new_tokens,
                     progress=progress)

    def check(self, text: Text, interventions: list[Intervention], *, chat: bool = False) -> None:
        """Refuse interventions that cannot apply to this model and prompt (before a long run)."""
        check_interventions(self.model, interventions, self.prompt(text, chat=chat).ids)

    def preview(self, spec: SteeringSpec | list[SteeringSpec]) -> list[dict[str, Any]]:
        """The neurons each spec selects (`spec`: its number), with descriptions and the value each
        would be clamped to."""
        view = self._need_atlas("steering")
        described = view.descriptions()
        out = []
        for number, one in enumerate(spec if isinstance(spec, list) else [spec], 1):
            for layer, neuron, polarity in select(one, view):
                q = float(view.quantile(one.level, polarity)[layer, neuron])
                d = described.get((layer, neuron, polarity))
                out.append({"id": f"L{layer}/N{neuron}{polarity}", "layer": layer, "neuron": neuron,
                            "polarity": polarity, "quantile": None if q != q else q,
                            "value": None if q != q else one.value * q, "spec": number, "sides": one.sides,
                            "description": d.text if d else None, "score": d.score if d else None})
        return out

    def search(self, query: str, k: int = 20, *, layers: Iterable[int] | None = None,
               polarity: str | None = None, min_score: float | None = None) -> list[Hit]:
        """Neurons by meaning; `layers`: only these layer indices (a list, set or range)."""
        return self._need_atlas("search").search().search(query, k, layers=layers, polarity=polarity,
                                                          min_score=min_score)

    def neuron(self, layer: int, neuron: int, *, candidates: bool = False) -> dict[str, Any]:
        return neuron_page(self._need_atlas("the neuron page").store, self.model, layer, neuron,
                           candidates=candidates)

    def lens(self, text: Text, *, position: int | None = None, target: str | int | None = None, k: int = 5,
             chat: bool = False) -> list[LensLayer]:
        prompt = self.prompt(text, chat=chat)
        target_id = self._target(target) if target is not None else None
        return logit_lens(self.model, prompt, prompt.position(position), target=target_id, k=k)

    def lens_view(self, text: Text, *, position: int | None = None, target: str | int | None = None, k: int = 5,
                  chat: bool = False, tuned: TunedLens | None = None) -> LensReport:
        """Both lens views (each layer's top-k at a position, every cell's top token) from one
        unembedding of every layer, and the probabilities the heatmap draws; through `tuned`'s
        translators when given (the tuned lens)."""
        prompt = self.prompt(text, chat=chat)
        target_id = self._target(target) if target is not None else None
        return lens_report(self.model, prompt, prompt.position(position), target=target_id, k=k, tuned=tuned)

    def attention(self, text: Text, layer: int, *, chat: bool = False) -> np.ndarray:
        """[heads, T, T] attention weights of one layer."""
        return attention_patterns(self.model, self.prompt(text, chat=chat), [layer])[layer].numpy()

    def attention_view(self, text: Text, *, layers: list[int] | None = None, head: int | None = None,
                       chat: bool = False) -> AttentionView:
        """Attention weights of the chosen layers (default: all), one head or the mean over heads."""
        return attention_view(self.model, self.prompt(text, chat=chat), layers, head)
