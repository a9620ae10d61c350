"""Steering vectors: the mean difference of a site's activations between two sets
of prompts (at each prompt's last token), added back with a strength."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from neurodbg.analyze.prompt import Prompt
from neurodbg.analyze.steering import target_logprob
from neurodbg.errors import NeurodbgError
from neurodbg.model import Model
from neurodbg.trace.interventions import AddVector


@torch.no_grad()
def mean_difference(model: Model, site: str, positive: list[str], negative: list[str], *,
                    chat: bool = False) -> torch.Tensor:
    """mean(act | positive) − mean(act | negative) at the last token of each prompt."""
    if not positive or not negative:
        raise NeurodbgError("a steering vector needs at least one prompt in each set")
    model.resolve(site)

    def mean(prompts: list[str]) -> torch.Tensor:
        rows = []
        for text in prompts:
            with model.trace(capture=site, reduce="last") as tr:
                tr.forward(text, chat=chat)
            rows.append(tr[site].reshape(-1).float())
        return torch.stack(rows).mean(0)

    return mean(positive) - mean(negative)


@dataclass
class SweepPoint:
    strength: float
    text: str
    target_logprob: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"strength": self.strength, "text": self.text, "target_logprob": self.target_logprob}


def sweep(model: Model, prompt: Prompt, site: str, vector: torch.Tensor, strengths: list[float], *,
          target: int | None = None, max_new_tokens: int = 20, tokens: str = "all") -> list[SweepPoint]:
    out = []
    for strength in strengths:
        edit = AddVector(site=site, vector=vector.tolist(), scale=strength, tokens=tokens)  # type: ignore[arg-type]
        with model.trace(interventions=[edit]) as tr:
            ids = tr.generate(prompt.ids, max_new_tokens=max_new_tokens)
        text = model.tokenizer.decode(ids[0, prompt.length:], skip_special_tokens=True)
        lp = target_logprob(model, prompt, target, [edit]) if target is not None else None
        out.append(SweepPoint(strength, text, lp))
    return out
