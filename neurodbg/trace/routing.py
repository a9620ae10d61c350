"""Forcing and banning experts: a mixture of experts' router output rewritten for the
named tokens.

The router returns (logits, weights, experts) for every token, flattened over the
batch. For the edited tokens the choice is made again from the router's own
probabilities (softmax of its logits in float32, as the families compute them) with
banned experts excluded and forced ones first; the chosen experts' weights are their
probabilities, renormalised to sum to one where the router does so (`norm_topk_prob`;
Mixtral always). Tokens not named keep the router's output exactly."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neurodbg.errors import InterventionError, NeuronIndexError
from neurodbg.trace.edits import token_mask
from neurodbg.trace.interventions import BanExperts, ForceExperts

RouterEdit = ForceExperts | BanExperts


def router_experts(router: nn.Module) -> int:
    number = getattr(router, "num_experts", None)
    if isinstance(number, int):
        return number
    weight = getattr(router, "weight", None)
    if isinstance(weight, torch.Tensor):
        return int(weight.shape[0])
    raise InterventionError(f"cannot tell how many experts {type(router).__name__} routes to")


def check_router_edit(iv: RouterEdit, router: nn.Module, site: str) -> None:
    experts = router_experts(router)
    if max(iv.experts) >= experts:
        raise NeuronIndexError(f"expert {max(iv.experts)} out of range for {site} (0-{experts - 1})")
    top_k = getattr(router, "top_k", None)
    if isinstance(iv, ForceExperts) and isinstance(top_k, int) and len(iv.experts) > top_k:
        raise InterventionError(f"force_experts on {site}: {len(iv.experts)} experts, but each token goes "
                                f"to {top_k}")
    if isinstance(iv, BanExperts) and isinstance(top_k, int) and len(set(iv.experts)) > experts - top_k:
        raise InterventionError(f"ban_experts on {site}: banning {len(set(iv.experts))} of {experts} experts "
                                f"leaves fewer than the {top_k} each token goes to")


def reroute(router: nn.Module, output: Any, edits: list[RouterEdit], *, batch: int, offset: int,
            prompt_len: int) -> Any:
    """The router's output with `edits` applied (None: unchanged)."""
    if not isinstance(output, tuple) or len(output) < 3:
        raise InterventionError(f"{type(router).__name__} does not return (logits, weights, experts)")
    logits, weights, chosen = output[:3]
    rows = logits.shape[0]
    length = rows // batch
    positions = torch.arange(offset, offset + length, device=logits.device)
    probs = torch.softmax(logits.float(), dim=-1)
    key = probs.clone()
    edited = torch.zeros(rows, dtype=torch.bool, device=logits.device)
    for iv in edits:
        mask = token_mask(iv, positions, prompt_len).repeat(batch)            # [batch x tokens]
        experts = torch.tensor(iv.experts, device=logits.device)
        if isinstance(iv, BanExperts):
            key[mask.nonzero(), experts] = float("-inf")
        else:   # forced ones above any probability, the first highest
            first = 2.0 + torch.arange(len(iv.experts), 0, -1, device=logits.device, dtype=key.dtype)
            key[mask.nonzero(), experts] = first
        edited |= mask
    if not bool(edited.any()):
        return None
    k = chosen.shape[-1]
    _, new_chosen = torch.topk(key, k, dim=-1)
    new_weights = probs.gather(1, new_chosen)
    if getattr(router, "norm_topk_prob", True):
        new_weights = new_weights / new_weights.sum(dim=-1, keepdim=True)
    rows_edited = edited.unsqueeze(1)
    return (logits, torch.where(rows_edited, new_weights.to(weights.dtype), weights),
            torch.where(rows_edited, new_chosen.to(chosen.dtype), chosen), *output[3:])
