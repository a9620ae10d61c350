"""Mixture-of-experts layers found in a module, and the parameters a token uses.

A layer's routed experts are the child named `experts` of its MoE block: in
transformers 5 one module holding every expert's weights fused along a leading
axis of size `num_experts` (`gate_up_proj [E, 2I, H]`, `down_proj [E, H, I]`),
in older code and some families a list of expert modules. A token goes through
`top_k` of them (the block's, its router's, or the config's
`num_experts_per_tok`), so of a layer's expert parameters a token uses k / E;
everything else — attention, norms, the router, a shared expert, embeddings —
it uses whole. Active parameters per token are therefore exact:
total − Σ over MoE layers of expert parameters × (E − k) / E."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

TOP_K_NAMES = ("top_k", "num_experts_per_tok", "moe_topk", "num_selected_experts", "router_top_k")


@dataclass(frozen=True)
class MoeLayer:
    path: str             # the MoE block
    experts: int          # routed experts
    top_k: int            # experts per token
    expert_params: int    # all routed experts' parameters in this layer

    @property
    def unused_per_token(self) -> int:
        return self.expert_params * (self.experts - self.top_k) // self.experts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _experts_in(experts: nn.Module) -> int | None:
    number = getattr(experts, "num_experts", None)
    if isinstance(number, int) and number > 0:
        return number
    if isinstance(experts, nn.ModuleList) and len(experts) > 0:
        return len(experts)
    return None


def _top_k(block: nn.Module, config: Any) -> int | None:
    for owner in (block, getattr(block, "gate", None), getattr(block, "router", None), config):
        for name in TOP_K_NAMES:
            value = getattr(owner, name, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def moe_layers(module: nn.Module, config: Any = None) -> list[MoeLayer]:
    """Every MoE block of `module`, in model order."""
    config = config if config is not None else getattr(module, "config", None)
    text_config = getattr(config, "text_config", None) or config
    found = []
    for path, block in module.named_modules():
        experts = getattr(block, "experts", None)
        if not isinstance(experts, nn.Module) or experts is block:
            continue
        n = _experts_in(experts)
        k = _top_k(block, text_config)
        if n is None or k is None or k > n:
            continue
        found.append(MoeLayer(path, n, k, _count(experts)))
    return found


def active_params(total: int, layers: list[MoeLayer]) -> int:
    """Parameters one token uses (all of them for a dense model)."""
    return total - sum(layer.unused_per_token for layer in layers)
