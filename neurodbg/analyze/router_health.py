"""Router health of a mixture of experts: per layer and expert, from the router's own
outputs (its logits, and the experts and weights it chose for every token).

Figures, per layer:
- shares: the fraction of routed slots (tokens x k) each expert received;
- mean probability: each expert's softmax probability averaged over all tokens;
- mean weight: each expert's routing weight averaged over the tokens routed to it;
- entropy: each token's routing entropy (softmax over the experts) ÷ log(experts), averaged;
- CV²: the variance of the experts' loads over their squared mean (the load-balancing
  loss the seeds give, α·CV², is built on it; 0 is perfect balance);
- overflow: the share of routed slots beyond each expert's capacity, capacity_factor ×
  slots ÷ experts per forward batch (rounded up), as Switch Transformers drop them.

Verdicts, with the seeds' thresholds for 8 experts generalised to E experts:
- `collapse`: one expert takes more than `collapse_share` (80 %) of a layer's slots;
- `idle`: an expert under `idle_fraction` ÷ E of them (1 % at 8 experts);
- `healthy`: every expert within [`healthy_low` ÷ E, `healthy_high` ÷ E] (5–20 % at 8);
- `imbalanced`: neither collapsed nor healthy;
- `zombie`: an expert that gets tokens but whose output varies less than `zombie_fraction`
  (1 %) of the median expert's of its layer (the variance of its output before the
  routing weight, over its tokens: `expert_outputs`), when the report measured it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from neurodbg.errors import NeurodbgError


@dataclass(frozen=True)
class HealthThresholds:
    collapse_share: float = 0.8
    idle_fraction: float = 0.08
    healthy_low: float = 0.4
    healthy_high: float = 1.6
    zombie_fraction: float = 0.01


@dataclass
class LayerHealth:
    layer: int
    experts: int
    top_k: int
    tokens: int
    shares: list[float]
    mean_prob: list[float]
    mean_weight: list[float | None]
    entropy: float
    cv2: float
    overflow: float
    capacity_factor: float
    verdicts: list[str]
    idle: list[int] = field(default_factory=list)
    dominant: int | None = None          # the collapsed-onto expert
    output_variance: list[float | None] | None = None   # per expert (None: not measured, or no tokens)
    zombies: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RouterStats:
    """Running sums for one layer's router over any number of forward batches."""

    def __init__(self, layer: int, experts: int, top_k: int) -> None:
        self.layer, self.experts, self.top_k = layer, experts, top_k
        self.tokens = 0
        self.counts = torch.zeros(experts, dtype=torch.float64)
        self.prob_sum = torch.zeros(experts, dtype=torch.float64)
        self.weight_sum = torch.zeros(experts, dtype=torch.float64)
        self.entropy_sum = 0.0
        self.slots = 0
        self.overflowing = 0.0
        self.overflow_at: float | None = None

    def update(self, logits: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor,
               capacity_factor: float) -> None:
        """One forward batch: logits [..., E], chosen and weights [..., k] for the same tokens."""
        logits = logits.detach().reshape(-1, self.experts).double().cpu()
        chosen = chosen.detach().reshape(-1, self.top_k).long().cpu()
        weights = weights.detach().reshape(-1, self.top_k).double().cpu()
        probs = torch.softmax(logits, dim=-1)
        counts = torch.bincount(chosen.flatten(), minlength=self.experts).double()
        self.tokens += logits.shape[0]
        self.counts += counts
        self.prob_sum += probs.sum(0)
        self.weight_sum.index_add_(0, chosen.flatten(), weights.flatten())
        # 0 * log 0 = 0: a probability that underflows contributes nothing
        self.entropy_sum += float(-(probs * torch.log(probs.clamp_min(1e-300))).sum())
        slots = chosen.numel()
        capacity = math.ceil(capacity_factor * slots / self.experts)
        self.slots += slots
        self.overflowing += float((counts - capacity).clamp_min(0).sum())
        self.overflow_at = capacity_factor

    def health(self, thresholds: HealthThresholds | None = None,
               output_variance: list[float | None] | None = None) -> LayerHealth:
        t = thresholds or HealthThresholds()
        if self.tokens == 0:
            raise NeurodbgError(f"layer {self.layer}'s router saw no tokens")
        e = self.experts
        shares = (self.counts / self.counts.sum()).tolist()
        loads = self.counts
        cv2 = float(loads.var(unbiased=False) / loads.mean() ** 2) if float(loads.mean()) > 0 else 0.0
        mean_weight = [float(w / c) if c > 0 else None for w, c in zip(self.weight_sum, self.counts, strict=True)]
        idle = [i for i, s in enumerate(shares) if s < t.idle_fraction / e]
        top = max(range(e), key=lambda i: shares[i])
        verdicts = []
        dominant = None
        if shares[top] > t.collapse_share:
            verdicts.append("collapse")
            dominant = top
        if idle:
            verdicts.append("idle")
        zombies: list[int] = []
        measured = sorted(v for v in (output_variance or []) if v is not None)
        if measured:
            median = measured[len(measured) // 2]
            zombies = [i for i, v in enumerate(output_variance or []) if v is not None
                       and v < t.zombie_fraction * median]
        if not verdicts:
            healthy = all(t.healthy_low / e <= s <= t.healthy_high / e for s in shares)
            verdicts.append("healthy" if healthy else "imbalanced")
        if zombies:
            verdicts.append("zombie")
        return LayerHealth(self.layer, e, self.top_k, self.tokens, [round(s, 6) for s in shares],
                           [round(float(p / self.tokens), 6) for p in self.prob_sum],
                           [None if w is None else round(w, 6) for w in mean_weight],
                           round(self.entropy_sum / self.tokens / math.log(e), 6), round(cv2, 6),
                           round(self.overflowing / self.slots, 6) if self.slots else 0.0,
                           float(self.overflow_at or 0.0), verdicts, idle, dominant,
                           None if output_variance is None else
                           [None if v is None else float(f"{v:.6g}") for v in output_variance], zombies)
