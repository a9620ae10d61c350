"""Attention patterns per layer and head (the `attn.pattern` sites; the trace
switches to eager attention for that run and restores it)."""

from __future__ import annotations

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
