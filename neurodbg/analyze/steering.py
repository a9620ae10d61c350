"""Steering: set chosen neurons to λ × their atlas tail quantile (λ = 0 ablates,
λ > 1 boosts beyond anything the corpus showed) on chosen tokens, then generate
with and without and compare.

A steering spec names neurons explicitly (`L5/N12+`) or by a semantic query over
descriptions (top-k, optional polarity). It resolves to the foundation's
intervention data (one `set` per layer), so a resolved spec replays anywhere
(`neurodbg trace --intervene`, `neurodbg steer --replay`, the web app)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from transformers.generation.streamers import BaseStreamer

from neurodbg.analyze.atlas_view import AtlasView
from neurodbg.analyze.prompt import Prompt
from neurodbg.atlas.records import parse_neuron_id
from neurodbg.errors import InterventionError, NeurodbgError
from neurodbg.model import Model
from neurodbg.trace.check import check_interventions
from neurodbg.trace.interventions import Intervention, SetValue


class SteeringSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    neurons: list[str] | None = None               # ids like L5/N12 or L5/N12- (polarity picks the tail)
    query: str | None = None                        # or: neurons whose descriptions match this
    k: int = Field(default=50, ge=1)
    polarity: Literal["+", "-"] | None = None
    min_score: float | None = None
    value: float = 0.0                              # λ, relative to each neuron's tail quantile
    level: float = Field(default=1e-4, gt=0, lt=1)  # which tail quantile
    tokens: Literal["prompt", "generated", "all"] | list[int] = "all"


def parse_spec(data: Any) -> SteeringSpec:
    try:
        return SteeringSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InterventionError(f"invalid steering spec: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def select(spec: SteeringSpec, view: AtlasView) -> list[tuple[int, int, str]]:
    """The (layer, neuron, polarity) the spec names."""
    if (spec.neurons is None) == (spec.query is None):
        raise NeurodbgError("a steering spec names neurons or gives a query (exactly one of them)")
    if spec.neurons is not None:
        out = []
        for text in spec.neurons:
            layer, neuron, polarity = parse_neuron_id(text)
            if layer not in view.layers or not 0 <= neuron < view.width:
                raise NeurodbgError(f"{text} is not in the atlas (layers {view.layers[0]}-{view.layers[-1]}, "
                                    f"neurons 0-{view.width - 1})")
            out.append((layer, neuron, polarity or spec.polarity or "+"))
        return out
    hits = view.search().search(spec.query or "", spec.k, polarity=spec.polarity,
                                          min_score=spec.min_score)
    if not hits:
        raise NeurodbgError(f"no described neuron matches {spec.query!r} with these filters")
    return [(h.layer, h.neuron, h.polarity) for h in hits]


def resolve(spec: SteeringSpec, view: AtlasView, model: Model) -> list[Intervention]:
    """One `set` intervention per layer: value λ × quantile(level, polarity) per neuron."""
    by_layer: dict[int, dict[int, float]] = {}
    tails = {p: view.quantile(spec.level, p) for p in "+-"}
    for layer, neuron, polarity in select(spec, view):
        q = float(tails[polarity][layer, neuron])
        if q != q:   # NaN: no quantile for this neuron
            raise NeurodbgError(f"L{layer}/N{neuron} has no {spec.level:g} quantile in the atlas")
        by_layer.setdefault(layer, {})[neuron] = spec.value * q
    out: list[Intervention] = []
    for layer in sorted(by_layer):
        neurons = sorted(by_layer[layer])
        site = f"layers.{layer}.mlp.act"
        model.resolve(site)
        out.append(SetValue(site=site, neurons=neurons, value=[by_layer[layer][n] for n in neurons],
                            tokens=spec.tokens))
    return out


@dataclass
class SteeringResult:
    prompt_tokens: int
    baseline_text: str
    steered_text: str
    interventions: list[Intervention]
    target: int | None = None
    baseline_logprob: float | None = None
    steered_logprob: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def delta_logprob(self) -> float | None:
        if self.baseline_logprob is None or self.steered_logprob is None:
            return None
        return self.steered_logprob - self.baseline_logprob

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline_text, "steered": self.steered_text, "target": self.target,
                "baseline_logprob": self.baseline_logprob, "steered_logprob": self.steered_logprob,
                "delta_logprob": self.delta_logprob, "neurons": sum(len(i.neurons or []) for i in self.interventions),
                "interventions": [i.model_dump() for i in self.interventions], **self.extra}


def target_logprob(model: Model, prompt: Prompt, target: int, interventions: list[Intervention]) -> float:
    """log p(target) as the next token after the prompt, under the interventions."""
    with torch.no_grad(), model.trace(interventions=interventions) as tr:
        out = tr.forward({"input_ids": prompt.ids.to(model.device)})
    return float(torch.log_softmax(out.logits[0, -1].float(), dim=-1)[target])


Progress = Callable[[str, int], None]      # (stage "baseline" | "steered", tokens generated so far)


class _CountingStreamer(BaseStreamer):
    """Reports each generated token; `generate` first hands it the prompt, which is not counted."""

    def __init__(self, stage: str, progress: Progress) -> None:
        self.stage, self.progress, self.count = stage, progress, -1

    def put(self, value: torch.Tensor) -> None:
        self.count += 1
        if self.count:
            self.progress(self.stage, self.count)

    def end(self) -> None:
        pass


def steer(model: Model, prompt: Prompt, interventions: list[Intervention], *, target: int | None = None,
          max_new_tokens: int = 20, progress: Progress | None = None) -> SteeringResult:
    """Greedy generation without and with the interventions, plus the target's log-prob change.
    `progress` is called after every generated token (it may raise to abandon the run). The
    interventions are checked against the model and prompt before anything is generated."""
    check_interventions(model, interventions, prompt.ids)
    def generate(edits: list[Intervention], stage: str) -> str:
        extra: dict[str, Any] = {"streamer": _CountingStreamer(stage, progress)} if progress is not None else {}
        with model.trace(interventions=edits) as tr:
            out = tr.generate(prompt.ids, max_new_tokens=max_new_tokens, **extra)
        return model.tokenizer.decode(out[0, prompt.length:], skip_special_tokens=True)

    result = SteeringResult(prompt.length, generate([], "baseline"), generate(interventions, "steered"),
                            interventions, target)
    if target is not None:
        result.baseline_logprob = target_logprob(model, prompt, target, [])
        result.steered_logprob = target_logprob(model, prompt, target, interventions)
    return result
