"""What a neuron writes: its output direction (its column of down_proj, or the
family's equivalent) read through the final norm and the unembedding, as the
tokens it promotes and suppresses most."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neurodbg.errors import NeurodbgError
from neurodbg.model import Model

CHUNK = 256


@dataclass
class LogitEffects:
    promoted_ids: torch.Tensor       # [neurons, k]
    promoted_values: torch.Tensor
    suppressed_ids: torch.Tensor     # [neurons, k], most negative first
    suppressed_values: torch.Tensor


def output_directions(model: Model, layer: int) -> torch.Tensor:
    """[neurons, hidden]: row n is what neuron n adds to the residual stream per unit activation."""
    if model.adapter is None or (path := model.adapter.writer_path(layer)) is None:
        raise NeurodbgError(f"{model.name}: no known neuron output directions")
    module = dict(model.module.named_modules())[path]
    weight = module.weight.detach()
    if isinstance(module, nn.Linear):
        return weight.t()                     # Linear stores [out, in]
    return weight                             # GPT-2's Conv1D stores [in, out]


def _module(model: Model, site: str) -> nn.Module | None:
    if model.adapter is None or site not in model.adapter.sites:
        return None
    return dict(model.module.named_modules())[model.adapter.sites[site].module_path]


def _without_bias(module: nn.Module, out: torch.Tensor) -> torch.Tensor:
    bias = getattr(module, "bias", None)
    return out - bias if isinstance(bias, torch.Tensor) else out


@torch.no_grad()
def logit_effects(model: Model, layer: int, k: int = 10) -> LogitEffects:
    directions = output_directions(model, layer)
    norm = _module(model, "final_norm")
    unembed = _module(model, "logits")
    if unembed is None:
        raise NeurodbgError(f"{model.name} has no unembedding; output tokens are unavailable")
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for start in range(0, directions.shape[0], CHUNK):
        block = directions[start:start + CHUNK].unsqueeze(0)            # [1, c, hidden]: c "tokens"
        # The norm's overall scale does not change a ranking; its per-channel gain does.
        # Biases (LayerNorm's beta, an unembedding bias) are the same for every neuron: remove them.
        normed = _without_bias(norm, norm(block)) if norm is not None else block
        logits = _without_bias(unembed, unembed(normed))[0].float()
        top = logits.topk(k, dim=-1)
        bottom = logits.topk(k, dim=-1, largest=False)
        parts.append((top.indices, top.values, bottom.indices, bottom.values))
    return LogitEffects(*(torch.cat([p[i] for p in parts]) for i in range(4)))
