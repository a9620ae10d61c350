"""Activation patching: run the corrupted prompt, paste in the clean run's
activation at one site (and optionally one position), and measure how much of
the clean behaviour comes back.

The metric is the logit difference between an answer token and a foil token
at the last position; `restored` is (patched − corrupted) / (clean − corrupted),
1 meaning that site alone carries the difference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from neurodbg.analyze.prompt import Prompt
from neurodbg.errors import NeurodbgError
from neurodbg.model import Model
from neurodbg.trace.interventions import Patch


@dataclass
class PatchResult:
    clean: float
    corrupted: float
    sites: list[str]
    positions: list[int] | None          # None: whole sequence patched at once
    effect: torch.Tensor                 # [sites, positions or 1] metric after patching

    @property
    def restored(self) -> torch.Tensor:
        gap = self.clean - self.corrupted
        return (self.effect - self.corrupted) / gap if gap != 0 else torch.zeros_like(self.effect)

    def to_dict(self) -> dict[str, Any]:
        return {"clean": self.clean, "corrupted": self.corrupted, "sites": self.sites, "positions": self.positions,
                "metric": self.effect.tolist(), "restored": self.restored.tolist()}


def _metric(logits: torch.Tensor, answer: int, foil: int) -> float:
    last = logits[0, -1].float()
    return float(last[answer] - last[foil])


@torch.no_grad()
def patch_sweep(model: Model, clean: Prompt, corrupted: Prompt, answer: int, foil: int, *,
                sites: str | list[str] = "layers.*.resid_out", per_position: bool = False) -> PatchResult:
    if clean.length != corrupted.length:
        raise NeurodbgError(f"clean and corrupted prompts must have the same number of tokens "
                            f"({clean.length} vs {corrupted.length})")
    names = [s.name for s in model.resolve(sites)]
    with model.trace(capture=names) as tr:
        out = tr.forward({"input_ids": clean.ids.to(model.device)})
    source = {"clean": {n: tr[n] for n in names}}
    clean_metric = _metric(out.logits, answer, foil)
    base = model.module(corrupted.ids.to(model.device)).logits
    corrupted_metric = _metric(base, answer, foil)
    positions = list(range(clean.length)) if per_position else None
    effect = torch.zeros(len(names), len(positions) if positions else 1)
    for i, name in enumerate(names):
        for j in range(len(positions) if positions else 1):
            patch = Patch(site=name, source="clean", tokens=[positions[j]] if positions else "all")
            with model.trace(interventions=[patch], sources=source) as tr:
                patched = tr.forward({"input_ids": corrupted.ids.to(model.device)})
            effect[i, j] = _metric(patched.logits, answer, foil)
    return PatchResult(clean_metric, corrupted_metric, names, positions, effect)
