"""Each routed expert's neurons, inside transformers 5's fused experts.

A mixture-of-experts layer of transformers 5 keeps its experts in one module
(`mlp.experts`: `gate_up_proj` [E, 2I, H], `down_proj` [E, H, I]) and computes them by
its configured implementation (an eager loop, grouped or batched matmuls), so no
module's input or output is one expert's neurons. The site
`layers.{i}.experts.{e}.act` is computed beside it: a forward hook on the experts
module takes what they were given (the tokens, the chosen experts and their weights)
and computes expert e's neurons, act(x·W_gate) ⊙ (x·W_up), for the tokens routed to
it, as the eager loop does. The site's value is [batch, tokens, I], zero at tokens
not routed to e (the expert did not run for them).

An edit of such a site changes the layer's output by exactly what the edit changes
downstream: for the routed tokens, routing weight × (edited − original neurons) ·
W_downᵀ is added to the experts' output; other tokens keep it bit for bit. An edit at
a token not routed to the expert changes nothing (`force_experts` routes it there).
Reading changes nothing: without edits the hook returns nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from neurodbg.sites.fused_experts import expert_count, expert_width, recomputable

__all__ = ["ExpertNeurons", "expert_count", "expert_neurons", "expert_width", "recomputable",
           "with_edited_neurons"]


@dataclass
class ExpertNeurons:
    """Expert e's neurons at the tokens routed to it."""
    rows: torch.Tensor          # [n] indices into the flattened tokens
    weights: torch.Tensor       # [n] the routing weight of e for each
    values: torch.Tensor        # [n, I] act(gate) * up

    def dense(self, tokens: int) -> torch.Tensor:
        """[tokens, I] with zeros where the expert did not run."""
        out = self.values.new_zeros((tokens, self.values.shape[-1]))
        out[self.rows] = self.values
        return out


def expert_neurons(experts: nn.Module, args: tuple[Any, ...], expert: int) -> ExpertNeurons:
    """Expert `expert`'s neurons from the experts module's inputs (hidden [N, H], top-k index and weights)."""
    hidden, index, weights = args[0], args[1], args[2]
    chosen = index == expert                                    # [N, k]
    rows = chosen.any(dim=-1).nonzero(as_tuple=True)[0]
    gate_up = cast(torch.Tensor, experts.gate_up_proj)
    act = cast(Callable[[torch.Tensor], torch.Tensor], experts.act_fn)
    gate, up = F.linear(hidden[rows], gate_up[expert]).chunk(2, dim=-1)
    weight = (weights * chosen.to(weights.dtype)).sum(dim=-1)[rows]
    return ExpertNeurons(rows, weight, act(gate) * up)


def with_edited_neurons(experts: nn.Module, output: torch.Tensor, neurons: ExpertNeurons, expert: int,
                        edited: torch.Tensor) -> torch.Tensor:
    """The experts' output after expert `expert`'s neurons became `edited` ([N, I]) at its tokens."""
    delta = edited[neurons.rows] - neurons.values
    down = cast(torch.Tensor, experts.down_proj)
    change = F.linear(delta, down[expert]) * neurons.weights[:, None].to(delta.dtype)
    return output.index_add(0, neurons.rows, change.to(output.dtype))
