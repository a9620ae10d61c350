"""A small mixture of experts to train on the digits, for the router-collapse
walkthrough and its tests: an input layer, one MoE layer of `experts` two-layer MLP
experts behind a top-k router (Switch-style: each chosen expert's output is scaled by
its softmax probability, not renormalised, so the router learns from the task), a
residual connection and a classifier.

Trained without a balancing loss, top-1 routing collapses onto one expert: the expert
chosen early learns fastest, so the router prefers it more (the rich get richer).
`balancing_loss` adds the seeds' α·CV² or the Switch auxiliary loss."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from neurodbg.train.moe_losses import cv2_loss, switch_loss

Balancing = Literal["none", "cv2", "switch"]


class TopKRouter(nn.Module):
    """Scores the experts; returns (logits, weights of the chosen, chosen experts) like transformers' routers."""

    def __init__(self, width: int, experts: int, top_k: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, experts, bias=False)
        self.num_experts, self.top_k = experts, top_k

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.proj(x)
        weights, chosen = torch.softmax(logits, dim=-1).topk(self.top_k, dim=-1)
        return logits, weights, chosen


class MoeLayer(nn.Module):
    def __init__(self, width: int, experts: int, top_k: int, hidden: int) -> None:
        super().__init__()
        self.router = TopKRouter(width, experts, top_k)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
                                     for _ in range(experts))
        self.last_route: tuple[torch.Tensor, torch.Tensor] | None = None     # (logits, chosen) of the last forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, weights, chosen = self.router(x)
        self.last_route = (logits, chosen)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            if rows.numel():
                out = out.index_add(0, rows, weights[rows, slot, None] * expert(x[rows]))
        return out


class DigitsMoe(nn.Module):
    def __init__(self, experts: int = 8, top_k: int = 1, width: int = 64, hidden: int = 32) -> None:
        super().__init__()
        self.inp = nn.Linear(64, width)
        self.act = nn.ReLU()
        self.moe = MoeLayer(width, experts, top_k, hidden)
        self.out = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.inp(x))
        return self.out(h + self.moe(h))


def digits_moe(experts: int = 8, top_k: int = 1, *, seed: int = 0) -> DigitsMoe:
    torch.manual_seed(seed)
    return DigitsMoe(experts, top_k)


def balancing_loss(model: DigitsMoe, balancing: Balancing, alpha: float = 0.01) -> torch.Tensor | None:
    """α times the chosen balancing loss of the last forward's routing (None for "none")."""
    if balancing == "none":
        return None
    if model.moe.last_route is None:
        raise RuntimeError("run the model forward before asking for its balancing loss")
    logits, chosen = model.moe.last_route
    return alpha * (cv2_loss(logits) if balancing == "cv2" else switch_loss(logits, chosen))
