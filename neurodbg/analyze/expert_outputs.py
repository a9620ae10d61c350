"""What each routed expert answers: the variance of its output (before the routing weight)
over the tokens routed to it. A "zombie" expert — the seeds' symptom of collapse — is
chosen but answers with almost nothing.

transformers 5 computes a layer's fused experts inside one module (by its configured
experts implementation), so no hook sees one expert's output. While
`watch_expert_outputs` is open, a forward hook on each MoE layer's experts takes their
inputs (the tokens, the chosen experts) and computes every routed expert's output
again from the fused weights, folding it into running sums; the model's own computation
is untouched (its outputs stay bit-identical). That recomputation costs about as much
as the experts themselves, so reports ask for it (`moe report --zombies`). Layouts
other than the fused gate-up / down one are left alone (their variance is None)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from neurodbg.model import Model
from neurodbg.sites.fused_experts import expert_count, recomputable
from neurodbg.trace.expert_sites import expert_neurons


class ExpertOutputs:
    """Running sums of one layer's experts' outputs: count, sum and sum of squares per expert."""

    def __init__(self, experts: int, width: int) -> None:
        self.width = width
        self.count = torch.zeros(experts, dtype=torch.float64)
        self.total_sq = torch.zeros(experts, dtype=torch.float64)
        self.sum_vec = torch.zeros((experts, width), dtype=torch.float64)

    def add(self, expert: int, outputs: torch.Tensor) -> None:
        y = outputs.detach().double().cpu()
        self.count[expert] += y.shape[0]
        self.total_sq[expert] += float((y * y).sum())
        self.sum_vec[expert] += y.sum(0)

    def variance(self) -> list[float | None]:
        """Per expert: the mean over output dimensions of the variance over its tokens."""
        out: list[float | None] = []
        for e in range(len(self.count)):
            n = float(self.count[e])
            if n == 0:
                out.append(None)
                continue
            mean = self.sum_vec[e] / n
            out.append(max(0.0, float(self.total_sq[e] / (n * self.width) - (mean * mean).mean())))
        return out


def _recompute(stats: ExpertOutputs) -> Any:
    @torch.no_grad()
    def hook(experts: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        down = cast(torch.Tensor, experts.down_proj)
        for e in torch.unique(args[1]).tolist():
            if 0 <= e < expert_count(experts):
                stats.add(int(e), F.linear(expert_neurons(experts, args, int(e)).values, down[e]))
    return hook


@contextmanager
def watch_expert_outputs(model: Model, layers: list[int]) -> Iterator[dict[int, ExpertOutputs]]:
    """While open, the experts of `layers` (those of the fused layout) fold their outputs into
    the returned sums, by layer."""
    named = dict(model.module.named_modules())
    found: dict[int, ExpertOutputs] = {}
    handles = []
    try:
        for layer in layers:
            router = named.get(model.site(f"layers.{layer}.router.logits").module_path)
            path = model.site(f"layers.{layer}.router.logits").module_path.rsplit(".", 1)[0] + ".experts"
            experts = named.get(path)
            if router is None or experts is None or not recomputable(experts):
                continue
            found[layer] = ExpertOutputs(int(experts.num_experts), int(experts.down_proj.shape[1]))
            handles.append(experts.register_forward_hook(_recompute(found[layer])))
        yield found
    finally:
        for handle in handles:
            handle.remove()
