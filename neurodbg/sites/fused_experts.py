"""transformers 5's fused routed experts: one module holding every expert's weights
(`gate_up_proj` [E, 2I, H], `down_proj` [E, H, I], `act_fn`), the layout whose
per-expert neurons neurodbg computes (`trace.expert_sites`)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn


def recomputable(experts: nn.Module) -> bool:
    """Whether the experts use the fused gate-up / down layout computed here (no biases, not transposed)."""
    gate_up, down = getattr(experts, "gate_up_proj", None), getattr(experts, "down_proj", None)
    return (isinstance(gate_up, torch.Tensor) and gate_up.dim() == 3 and isinstance(down, torch.Tensor)
            and down.dim() == 3 and hasattr(experts, "act_fn")
            and isinstance(getattr(experts, "num_experts", None), int)
            and not getattr(experts, "has_bias", False) and not getattr(experts, "is_transposed", False)
            and getattr(experts, "is_concatenated", True))


def expert_count(experts: nn.Module) -> int:
    return int(cast(int, experts.num_experts))


def expert_width(experts: nn.Module) -> int:
    return int(cast(torch.Tensor, experts.down_proj).shape[-1])
