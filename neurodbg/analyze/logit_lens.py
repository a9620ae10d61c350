"""Logit lens: each layer's residual stream read through the final norm and the
unembedding, as if the model stopped there. At the last layer it is the model's
own logits (a test checks this). Given a `TunedLens`, each layer's stream passes
through that layer's trained translator first (the tuned lens); every view below
takes one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurodbg.analyze.prompt import Prompt
from neurodbg.analyze.tuned_lens import TunedLens
from neurodbg.errors import NeurodbgError
from neurodbg.model import Model


@dataclass
class LensLayer:
    layer: int
    top: list[tuple[str, int, float]]      # (token, id, prob) at the chosen position
    target_rank: int | None
    target_prob: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "top": [{"token": t, "id": i, "prob": round(p, 6)} for t, i, p in self.top],
                "target_rank": self.target_rank,
                "target_prob": None if self.target_prob is None else round(self.target_prob, 6)}


def _module(model: Model, site: str) -> torch.nn.Module:
    found = model.resolve(site)
    return model.module.get_submodule(found[0].module_path)


def lens_readout(model: Model) -> tuple[list[str], torch.nn.Module, torch.nn.Module]:
    """Every layer's resid_out site name, the final norm and the unembedding."""
    if model.adapter is None or "final_norm" not in model.adapter.sites or "logits" not in model.adapter.sites:
        raise NeurodbgError(f"the logit lens needs a final norm and an unembedding; {model.name} has no adapter "
                            f"that names them")
    return [s.name for s in model.resolve("layers.*.resid_out")], _module(model, "final_norm"), _module(model, "logits")


@torch.no_grad()
def lens_logits(model: Model, prompt: Prompt, tuned: TunedLens | None = None) -> torch.Tensor:
    """[layers, T, vocab] logits of every layer's resid_out (through its translator when `tuned`)."""
    names, norm, unembed = lens_readout(model)
    if tuned is not None:
        tuned.check(model)
    with model.trace(capture=names) as tr:
        tr.forward({"input_ids": prompt.ids.to(model.device)})
    streams = [tr[n] if tuned is None else tuned.translate(i, tr[n]) for i, n in enumerate(names)]
    return torch.stack([unembed(norm(h))[0] for h in streams]).float()


def logit_lens(model: Model, prompt: Prompt, position: int, *, target: int | None = None, k: int = 5,
               logits: torch.Tensor | None = None, tuned: TunedLens | None = None) -> list[LensLayer]:
    """`logits`: `lens_logits(model, prompt)` when the caller already has them (one unembedding, two views)."""
    logits = (lens_logits(model, prompt, tuned) if logits is None else logits)[:, position]      # [layers, vocab]
    probs = torch.softmax(logits, dim=-1)
    out = []
    for layer in range(logits.shape[0]):
        top = probs[layer].topk(k)
        entries = [(model.tokenizer.decode([int(i)]), int(i), float(p))
                   for i, p in zip(top.indices, top.values, strict=True)]
        rank = prob = None
        if target is not None:
            prob = float(probs[layer, target])
            rank = int((logits[layer] > logits[layer, target]).sum()) + 1
        out.append(LensLayer(layer, entries, rank, prob))
    return out


@dataclass
class LensGrid:
    """The lens at every layer and position: each cell's top token and its probability,
    and (with a target) the target's probability — the classic logit-lens heatmap."""
    tokens: list[str]
    top_tokens: list[list[str]]          # [layers][positions]
    top_probs: list[list[float]]
    target: int | None = None
    target_probs: list[list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "top_tokens": self.top_tokens,
                "top_probs": [[round(p, 5) for p in row] for row in self.top_probs], "target": self.target,
                "target_probs": None if self.target_probs is None
                else [[round(p, 5) for p in row] for row in self.target_probs]}


def lens_grid(model: Model, prompt: Prompt, *, target: int | None = None, logits: torch.Tensor | None = None,
              tuned: TunedLens | None = None) -> LensGrid:
    logits = lens_logits(model, prompt, tuned) if logits is None else logits
    probs = torch.softmax(logits, dim=-1)   # [layers, T, vocab]
    best = probs.max(dim=-1)
    decode = model.tokenizer.decode
    top_tokens = [[decode([int(i)]) for i in row] for row in best.indices]
    grid = LensGrid(prompt.tokens, top_tokens, best.values.tolist())
    if target is not None:
        grid.target, grid.target_probs = target, probs[:, :, target].tolist()
    return grid


@dataclass
class LensReport:
    """Both lens views of one prompt from one unembedding of every layer: every layer's top-k at
    `position` (with the target's rank), the grid of every cell's top token, and for the heatmap
    the probability of one token everywhere (the target, or else the model's own top prediction
    at `position`)."""
    position: int
    layers: list[LensLayer]
    grid: LensGrid
    heat_token: str
    heat_probs: list[list[float]]        # [layers][positions]
    tuned: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"lens": "tuned" if self.tuned else "logit", "position": self.position,
                "layers": [layer.to_dict() for layer in self.layers], "grid": self.grid.to_dict()}

    def heatmap(self, path: str | Path) -> Path:
        from neurodbg.viz.figures import heatmap

        return heatmap(np.asarray(self.heat_probs), row_labels=[f"L{r.layer}" for r in self.layers],
                       col_labels=self.grid.tokens, path=path, xlabel="position", ylabel="layer", diverging=False,
                       title=f"{'tuned' if self.tuned else 'logit'} lens: p({self.heat_token!r}) by layer and position",
                       label="probability")


def lens_report(model: Model, prompt: Prompt, position: int, *, target: int | None = None, k: int = 5,
                tuned: TunedLens | None = None) -> LensReport:
    logits = lens_logits(model, prompt, tuned)
    layers = logit_lens(model, prompt, position, target=target, k=k, logits=logits)
    grid = lens_grid(model, prompt, target=target, logits=logits)
    heat = target if target is not None else layers[-1].top[0][1]
    probs = torch.softmax(logits, dim=-1)[:, :, heat]
    return LensReport(position, layers, grid, model.tokenizer.decode([heat]), probs.tolist(), tuned is not None)
