"""Attention patterns per layer and head (the `attn.pattern` sites; the trace
switches to eager attention for that run and restores it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurodbg.analyze.prompt import Prompt
from neurodbg.errors import NeurodbgError
from neurodbg.model import Model


@torch.no_grad()
def attention_patterns(model: Model, prompt: Prompt, layers: list[int] | None = None) -> dict[int, torch.Tensor]:
    """layer -> [heads, T, T] attention weights (query rows, key columns)."""
    sites = model.resolve("layers.*.attn.pattern")
    if not sites:
        raise NeurodbgError(f"{model.name} exposes no attention patterns")
    if layers is not None:
        have = {s.layer for s in sites}
        bad = [layer for layer in layers if layer not in have]
        if bad:
            raise NeurodbgError(f"no layer {bad[0]}; the model has layers 0-{max(h or 0 for h in have)}")
        sites = [s for s in sites if s.layer in layers]
    with model.trace(capture=[s.name for s in sites]) as tr:
        tr.forward({"input_ids": prompt.ids.to(model.device)})
    return {int(s.layer or 0): tr[s.name][0].float().cpu() for s in sites}


@dataclass
class AttentionView:
    """Attention weights of some layers, [heads, queries, keys] each, for one prompt; `head` picks
    one head for the figures and JSON (default: the mean over heads)."""
    tokens: list[str]
    weights: dict[int, np.ndarray]
    head: int | None = None

    @property
    def heads(self) -> int:
        return int(next(iter(self.weights.values())).shape[0])

    def chosen(self) -> dict[int, np.ndarray]:
        return {layer: (w[self.head] if self.head is not None else w.mean(0)) for layer, w in self.weights.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "heads": self.heads, "head": self.head,
                "layers": {str(layer): np.round(a, 5).tolist() for layer, a in self.chosen().items()}}

    def grid_png(self, path: str | Path) -> Path:
        from neurodbg.viz.figures import attention_grid

        which = f"head {self.head}" if self.head is not None else "mean over heads"
        return attention_grid(self.chosen(), self.tokens, path=path, title=f"attention ({which})")


def attention_view(model: Model, prompt: Prompt, layers: list[int] | None = None, head: int | None = None
                   ) -> AttentionView:
    weights = {layer: w.numpy() for layer, w in attention_patterns(model, prompt, layers).items()}
    view = AttentionView(prompt.tokens, weights, head)
    if head is not None and not 0 <= head < view.heads:
        raise NeurodbgError(f"head {head} out of range (0-{view.heads - 1})")
    return view
