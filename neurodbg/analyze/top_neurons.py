"""The most active neurons of one captured site, with the token where each peaks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from neurodbg.errors import NeurodbgError

Polarity = Literal["pos", "neg", "abs"]


@dataclass(frozen=True)
class NeuronHit:
    neuron: int
    value: float
    token_index: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def top_neurons(acts: torch.Tensor, k: int = 10, polarity: Polarity = "pos") -> list[NeuronHit]:
    """Top-k neurons of a [batch, tokens, neurons], [tokens, neurons] or [neurons]
    tensor (first batch row), ranked by their extreme over tokens."""
    if k < 1:
        raise NeurodbgError(f"top-k needs k >= 1, got {k}")
    if polarity not in ("pos", "neg", "abs"):
        raise NeurodbgError(f"unknown polarity {polarity!r}; choose pos, neg or abs")
    x = acts.detach().float()
    if x.dim() == 3:
        x = x[0]
    if x.dim() == 1:
        x = x.unsqueeze(0)
        has_tokens = False
    else:
        has_tokens = True
    if x.dim() != 2:
        raise NeurodbgError(f"top_neurons needs a tokens x neurons tensor, got shape {tuple(acts.shape)}")
    score = {"pos": x, "neg": -x, "abs": x.abs()}[polarity]
    best, where = score.max(dim=0)
    order = best.topk(min(k, best.numel())).indices
    return [NeuronHit(int(n), float(x[where[n], n]), int(where[n]) if has_tokens else None) for n in order]
