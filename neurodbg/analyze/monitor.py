"""The Monitor: one object over a model and its atlas that answers "why did the
model say that?" and "what if we turn these concepts off or up?". The CLI and
the web app only call this."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from neurodbg.analyze import neurons_behind
from neurodbg.analyze.atlas_view import AtlasView
from neurodbg.analyze.clusters import Cluster, cluster
from neurodbg.analyze.neurons_behind import Mode, NeuronReport
from neurodbg.analyze.prompt import Prompt, prepare, single_token
from neurodbg.analyze.steering import SteeringResult, SteeringSpec, resolve, steer
from neurodbg.analyze.token_view import Position, generate_view, token_view
from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import NeurodbgError
from neurodbg.model import Model
from neurodbg.trace.interventions import Intervention


@dataclass
class Analysis:
    prompt: Prompt
    report: NeuronReport
    clusters: list[Cluster]

    def to_dict(self) -> dict[str, Any]:
        ids = [f.id for f in self.report.findings]
        return {"tokens": self.prompt.tokens, "template": self.prompt.template, **self.report.to_dict(),
                "clusters": [c.to_dict(ids) for c in self.clusters]}


class Monitor:
    def __init__(self, model: Model, atlas: str | Path | AtlasStore | None = None) -> None:
        self.model = model
        store = atlas if isinstance(atlas, AtlasStore) or atlas is None else AtlasStore.open(atlas)
        self.view = AtlasView(store, model) if store is not None else None

    def _need_atlas(self, what: str) -> AtlasView:
        if self.view is None:
            raise NeurodbgError(f"{what} needs an atlas (--atlas DIR)")
        return self.view

    def prompt(self, text: str, *, chat: bool = False) -> Prompt:
        return prepare(self.model, text, chat=chat)

    def tokens(self, text: str, *, chat: bool = False, k: int = 5) -> list[Position]:
        return token_view(self.model, self.prompt(text, chat=chat), k=k)

    def generate(self, text: str, *, chat: bool = False, k: int = 5, max_new_tokens: int = 20
                 ) -> tuple[list[Position], int]:
        """Generate greedily; the token view over prompt and generated tokens, and where generation starts."""
        return generate_view(self.model, self.prompt(text, chat=chat), k=k, max_new_tokens=max_new_tokens)

    def analyze(self, text: str, *, target: str | None = None, position: int | None = None, chat: bool = False,
                mode: Mode = "attribution", top: int = 100, include_template: bool = False,
                rank: Literal["abs", "pos", "neg"] = "abs", level: float = 1e-4, threshold: float = 0.6,
                min_cluster: int = 3, label_with: Any = None) -> Analysis:
        """Neurons behind `target` as the next token after `position` (default: the last), grouped."""
        prompt = self.prompt(text, chat=chat)
        pos = prompt.position(position)
        if target is None:
            top1 = token_view(self.model, prompt, k=1)[pos].top[0]
            target_id = top1[1]
        else:
            target_id = single_token(self.model, target)
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
        return Analysis(prompt, report, groups)

    def clusters(self, report: NeuronReport, *, threshold: float = 0.6, min_size: int = 3) -> list[Cluster]:
        if self.view is None or not report.findings:
            return []
        keys = [(f.layer, f.neuron, f.polarity) for f in report.findings]
        texts = [f.description or "" for f in report.findings]
        vectors = self.view.embeddings(keys) if any(texts) else np.zeros((len(keys), 1), dtype=np.float32)
        return cluster(vectors, texts, [f.value for f in report.findings], threshold=threshold, min_size=min_size)

    def steering(self, spec: SteeringSpec) -> list[Intervention]:
        return resolve(spec, self._need_atlas("steering"), self.model)

    def steer(self, text: str, interventions: list[Intervention], *, target: str | None = None,
              chat: bool = False, max_new_tokens: int = 20) -> SteeringResult:
        prompt = self.prompt(text, chat=chat)
        target_id = single_token(self.model, target) if target is not None else None
        return steer(self.model, prompt, interventions, target=target_id, max_new_tokens=max_new_tokens)
