"""Steering: clamp chosen neurons to λ × their atlas tail quantile (λ = 0 silences,
λ > 1 boosts beyond anything the corpus showed) on chosen tokens, then generate
with and without and compare.

A steering spec names neurons explicitly (`L5/N12+`) or by a semantic query over
descriptions (top-k, optional polarity). As the seeds describe, a neuron chosen for
one polarity is clamped only where its activation has that polarity (`sides=
"selected"`: a `clamp` intervention; its other side keeps its exact values);
`sides="both"` sets it on both sides (a `set`, what steering did before). Several
specs run together — suppress what the Monitor found and boost what another query
found — and two specs that ask different values of the same neuron on the same side
are refused. Specs resolve to the foundation's intervention data (one intervention
per layer and side), so a resolved run replays anywhere (`neurodbg trace
--intervene`, `neurodbg steer --replay`, the web app).

Defaults: level 1e-4, λ 0, every token. The seeds' recipe (`seeds_spec`): level
1e-5, λ = 0 to suppress and 0.5 to boost, on the prompt's tokens (the system and
user turns, template included), never on generated ones."""

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
from neurodbg.trace.interventions import Clamp, Intervention, SetValue


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
    sides: Literal["selected", "both"] = "selected"  # clamp only the selected polarity's side, or both


SEEDS = {"suppress": 0.0, "boost": 0.5}     # the seeds' λ
SEEDS_LEVEL = 1e-5


def seeds_spec(action: Literal["suppress", "boost"], **fields: Any) -> SteeringSpec:
    """A spec with the seeds' recipe: λ 0 (suppress) or 0.5 (boost) × the 1e-5 tail quantile,
    on the prompt's tokens, the selected side only; `fields` name the neurons or query."""
    if action not in SEEDS:
        raise NeurodbgError(f"the seeds' recipe is suppress or boost, not {action!r}")
    return parse_spec({"value": SEEDS[action], "level": SEEDS_LEVEL, "tokens": "prompt", "sides": "selected",
                       **fields})


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


def resolve(spec: SteeringSpec | list[SteeringSpec], view: AtlasView, model: Model) -> list[Intervention]:
    """One intervention per layer and side of each spec: λ × quantile(level, polarity) per neuron,
    as a `clamp` on the selected side (or a `set` with `sides="both"`). Several specs are
    resolved together; two that ask different values of one neuron on one side are refused."""
    specs = spec if isinstance(spec, list) else [spec]
    if not specs:
        raise NeurodbgError("no steering spec was given")
    asked: dict[tuple[int, int, str], tuple[float, int]] = {}
    out: list[Intervention] = []
    for number, one in enumerate(specs, 1):
        groups: dict[tuple[int, str], dict[int, float]] = {}
        picked = select(one, view)          # once: a query embeds and searches
        tails = {p: view.quantile(one.level, p) for p in {pol for _, _, pol in picked}}
        for layer, neuron, polarity in picked:
            q = float(tails[polarity][layer, neuron])
            if q != q:   # NaN: no quantile for this neuron
                raise NeurodbgError(f"L{layer}/N{neuron} has no {one.level:g} quantile in the atlas")
            value = one.value * q
            sides = [polarity] if one.sides == "selected" else ["+", "-"]
            for side in sides:
                seen = asked.get((layer, neuron, side))
                if seen is not None and seen[0] != value and seen[1] != number:
                    raise InterventionError(
                        f"steering specs {seen[1]} and {number} contradict each other on L{layer}/N{neuron} "
                        f"({'positive' if side == '+' else 'negative'} side): {seen[0]:g} against {value:g}")
                asked[(layer, neuron, side)] = (value, number)
            groups.setdefault((layer, polarity if one.sides == "selected" else "both"), {})[neuron] = value
        for (layer, side), values in sorted(groups.items()):
            site = f"layers.{layer}.mlp.act"
            model.resolve(site)
            neurons = sorted(values)
            args: dict[str, Any] = {"site": site, "neurons": neurons, "value": [values[n] for n in neurons],
                                    "tokens": one.tokens}
            out.append(SetValue(**args) if side == "both"
                       else Clamp(**args, side="positive" if side == "+" else "negative"))
    return out


def touched_share(model: Model, interventions: list[Intervention]) -> tuple[int, int | None]:
    """(distinct MLP neurons the interventions edit, all MLP neurons of the model, or None where
    the config does not say): the seeds expect steering to touch under 0.2 % of them."""
    config = getattr(model.module, "config", None)
    width = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    embd = getattr(config, "n_embd", None)
    if width is None and isinstance(embd, int):
        width = 4 * embd                             # GPT-2's default inner width
    mlp = {s.name for s in model.resolve("layers.*.mlp.act")} if "layers.0.mlp.act" in model.sites else set()
    touched = {(iv.site, n) for iv in interventions if iv.site in mlp for n in (iv.neurons or [])}
    total = model.n_layers * width if isinstance(width, int) and mlp else None
    return len(touched), total


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
    touched: int = 0                      # distinct MLP neurons edited
    total_neurons: int | None = None      # all MLP neurons of the model

    @property
    def share(self) -> float | None:
        """The share of all MLP neurons the steering touched (the seeds: under 0.2 %)."""
        return None if not self.total_neurons else self.touched / self.total_neurons

    @property
    def delta_logprob(self) -> float | None:
        if self.baseline_logprob is None or self.steered_logprob is None:
            return None
        return self.steered_logprob - self.baseline_logprob

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline_text, "steered": self.steered_text, "target": self.target,
                "baseline_logprob": self.baseline_logprob, "steered_logprob": self.steered_logprob,
                "delta_logprob": self.delta_logprob, "neurons": self.touched, "total_neurons": self.total_neurons,
                "share": None if self.share is None else round(self.share, 8),
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
    result.touched, result.total_neurons = touched_share(model, interventions)
    if target is not None:
        result.baseline_logprob = target_logprob(model, prompt, target, [])
        result.steered_logprob = target_logprob(model, prompt, target, interventions)
    return result
