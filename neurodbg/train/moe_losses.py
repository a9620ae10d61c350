"""Load-balancing losses for mixture-of-experts routers, to add to the training loss.

- `cv2_loss`: the seeds' α·CV², the squared coefficient of variation of the experts'
  importance (each expert's softmax probability summed over the batch's tokens), as
  Shazeer et al. (2017) introduced it; 0 when every expert gets the same importance.
- `switch_loss`: the Switch Transformer's auxiliary loss (Fedus et al. 2021),
  E · Σ_e f_e · P_e with f_e the share of routed slots expert e received and P_e its
  mean probability; 1 at perfect balance. transformers' MoE models compute it
  themselves with `output_router_logits=True` and `router_aux_loss_coef`.

Both take the router's logits [..., experts]; multiply by α (0.01 is the usual start)."""

from __future__ import annotations

import torch


def cv2_loss(logits: torch.Tensor) -> torch.Tensor:
    importance = torch.softmax(logits.reshape(-1, logits.shape[-1]).float(), dim=-1).sum(0)
    return importance.var(unbiased=False) / importance.mean().square()


def switch_loss(logits: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """`chosen`: the experts each token was routed to [..., k]."""
    experts = logits.shape[-1]
    probs = torch.softmax(logits.reshape(-1, experts).float(), dim=-1)
    fraction = torch.bincount(chosen.reshape(-1), minlength=experts).float() / chosen.numel()
    return experts * (fraction * probs.mean(0)).sum()
