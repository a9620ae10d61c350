"""Which neurons are behind the token a model produced at one position.

- activation mode: neurons whose activation at some counted position lies beyond
  their atlas tail quantile, reported as activation ÷ quantile (> 1);
- attribution mode: activation × ∂(target log-probability)/∂activation, summed
  over counted positions up to the chosen one, for every `mlp.act` neuron from
  one backward pass with frozen weights (also × p for the probability itself).

Counted positions are the prompt's positions up to the chosen one, optionally
without chat-template tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from neurodbg.analyze.atlas_view import AtlasView
from neurodbg.analyze.prompt import Prompt
from neurodbg.errors import NeurodbgError
from neurodbg.model import Model

Mode = Literal["attribution", "activation"]


@dataclass
class NeuronFinding:
    layer: int
    neuron: int
    polarity: str            # sign of its activation where it mattered: which of its descriptions applies
    value: float             # attribution (log-prob units) or activation ÷ quantile
    activation: float        # the activation at `position`
    position: int            # where the neuron mattered most
    attribution_prob: float | None = None
    description: str | None = None
    score: float | None = None

    @property
    def id(self) -> str:
        return f"L{self.layer}/N{self.neuron}{self.polarity}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "layer": self.layer, "neuron": self.neuron, "polarity": self.polarity,
                "value": round(self.value, 6), "activation": round(self.activation, 6), "position": self.position,
                "attribution_prob": None if self.attribution_prob is None else round(self.attribution_prob, 8),
                "description": self.description, "score": self.score}


@dataclass
class NeuronReport:
    mode: Mode
    position: int
    target: int
    target_token: str
    logprob: float
    findings: list[NeuronFinding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "position": self.position, "target": self.target,
                "target_token": self.target_token, "logprob": round(self.logprob, 6),
                "neurons": [f.to_dict() for f in self.findings]}


def act_sites(model: Model) -> list[str]:
    sites = [s.name for s in model.resolve("layers.*.mlp.act")]
    if not sites:
        raise NeurodbgError(f"{model.name} has no mlp.act sites to analyse")
    return sites


def activations_and_grads(model: Model, prompt: Prompt, position: int, target: int
                          ) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """Per layer [T, d] activations and gradients of log p(target | ≤position); and that log-prob."""
    acts: dict[str, torch.Tensor] = {}

    def keep(name: str, value: torch.Tensor) -> None:
        if value.requires_grad:
            value.retain_grad()
        acts[name] = value

    params = [p for p in model.module.parameters() if p.requires_grad]
    embed: torch.nn.Module = model.module.get_input_embeddings()  # type: ignore[operator]
    # frozen weights: the graph starts at the embeddings' output, so backward touches activations only
    handle = embed.register_forward_hook(lambda _m, _a, out: out.detach().requires_grad_(True))
    for p in params:
        p.requires_grad_(False)
    try:
        ids = prompt.ids[:, : position + 1].to(model.device)
        with model.trace(capture=act_sites(model), sink=keep) as tr:
            out = tr.forward({"input_ids": ids}, grad=True)
        logprobs = torch.log_softmax(out.logits[0, position].float(), dim=-1)
        logprobs[target].backward()
    finally:
        handle.remove()
        for p in params:
            p.requires_grad_(True)
    names = act_sites(model)
    values = [acts[n].detach()[0] for n in names]
    grads: list[torch.Tensor] = []
    for n in names:
        grad = acts[n].grad
        grads.append(grad[0] if grad is not None else torch.zeros_like(values[len(grads)]))
    return values, grads, float(logprobs[target].detach())


def counted_positions(prompt: Prompt, position: int, include_template: bool, *, skip_first: bool = False
                      ) -> torch.Tensor:
    keep = [i for i in range(position + 1) if (include_template or not prompt.template[i])
            and not (skip_first and i == 0 and position > 0)]
    if not keep:
        raise NeurodbgError("no positions left to analyse once chat-template tokens are excluded")
    return torch.tensor(keep)


def attribution(model: Model, prompt: Prompt, position: int, target: int, *, top: int = 50,
                include_template: bool = True, rank: Literal["abs", "pos", "neg"] = "abs") -> NeuronReport:
    """`rank`: by |attribution|, or only those raising ('pos') or lowering ('neg') the target."""
    values, grads, logprob = activations_and_grads(model, prompt, position, target)
    where = counted_positions(prompt, position, include_template)
    per_pos = torch.stack([(v * g)[where] for v, g in zip(values, grads, strict=True)])   # [L, P, d]
    total = per_pos.sum(1)                                                                  # [L, d]
    flat = total.flatten()
    if rank not in ("abs", "pos", "neg"):
        raise NeurodbgError(f"rank must be abs, pos or neg (got {rank!r})")
    key = flat.abs() if rank == "abs" else (flat if rank == "pos" else -flat)
    order = key.topk(min(top, flat.numel())).indices
    prob = float(np.exp(logprob))
    report = NeuronReport("attribution", position, target, model.tokenizer.decode([target]), logprob)
    layers = [s.layer for s in model.resolve("layers.*.mlp.act")]
    width = total.shape[1]
    for idx in order.tolist():
        li, n = divmod(idx, width)
        value = float(total[li, n])
        if rank != "abs" and (value > 0) != (rank == "pos"):
            break
        peak = int(where[per_pos[li, :, n].abs().argmax()])
        polarity = "+" if float(values[li][peak, n]) >= 0 else "-"     # which of its descriptions applies
        report.findings.append(NeuronFinding(int(layers[li] or 0), n, polarity, value,
                                             float(values[li][position, n]), peak, attribution_prob=value * prob))
    return report


@torch.no_grad()
def activation(model: Model, prompt: Prompt, position: int, target: int, view: AtlasView, *, top: int = 50,
               include_template: bool = True, level: float = 1e-4) -> NeuronReport:
    names = act_sites(model)
    ids = prompt.ids[:, : position + 1].to(model.device)
    with model.trace(capture=names) as tr:
        out = tr.forward({"input_ids": ids})
    logprob = float(torch.log_softmax(out.logits[0, position].float(), dim=-1)[target])
    # position 0 is the attention sink, with outlier activations the scan never counted (skip_first):
    # against the atlas's quantiles it would always look exceptional
    where = counted_positions(prompt, position, include_template, skip_first=True)
    layers = [int(s.layer or 0) for s in model.resolve(names)]
    upper, lower = view.quantile(level, "+"), view.quantile(level, "-")
    report = NeuronReport("activation", position, target, model.tokenizer.decode([target]), logprob)
    candidates: list[tuple[float, int, int, str, int]] = []
    for name, layer in zip(names, layers, strict=True):
        if layer not in view.layers:       # the atlas did not scan this layer
            continue
        acts = tr[name][0][where].float().cpu().numpy()                 # [P, d]
        hi = np.where(upper[layer] > 0, acts / upper[layer], 0.0)       # only meaningful beyond a positive tail
        lo = np.where(lower[layer] < 0, acts / lower[layer], 0.0)
        for raw, polarity in ((hi, "+"), (lo, "-")):
            ratios = np.nan_to_num(raw, nan=0.0)
            best = ratios.max(0)
            for n in np.flatnonzero(best > 1.0):
                pos = int(where[int(ratios[:, n].argmax())])
                candidates.append((float(best[n]), layer, int(n), polarity, pos))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    for value, layer, neuron, polarity, pos in candidates[:top]:
        act = float(tr[names[layers.index(layer)]][0][pos, neuron])
        report.findings.append(NeuronFinding(layer, neuron, polarity, value, act, pos))
    return report


def describe_findings(report: NeuronReport, view: AtlasView | None) -> None:
    """Attach each neuron's description and score (of the polarity it acted in)."""
    if view is None:
        return
    descriptions = view.descriptions()
    for f in report.findings:
        d = descriptions.get((f.layer, f.neuron, f.polarity))
        if d is not None:
            f.description, f.score = d.text, d.score
