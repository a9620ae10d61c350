"""Exact tail quantiles from a bounded buffer: per neuron, the `capacity`
largest token-level values seen (and, in a second buffer, the smallest).

Only sequences whose extreme beats a neuron's current threshold are looked at,
so after a warm-up a batch costs almost nothing here. A quantile whose rank
lies inside the buffer is exact (linear interpolation between order
statistics, as numpy's default); deeper ones are reported as unavailable."""

from __future__ import annotations

import math

import torch


class TailBuffer:
    def __init__(self, capacity: int, width: int, sign: int, device: torch.device | str = "cpu") -> None:
        self.capacity, self.width, self.sign = capacity, width, sign
        self.keys = torch.full((capacity, width), float("-inf"), device=device)   # sign * value, descending

    def update(self, tokens: torch.Tensor, seq_extremes: torch.Tensor) -> None:
        """tokens [B, T, width] token activations; seq_extremes [B, width] their per-sequence
        max (sign=+1) or min (sign=-1)."""
        threshold = self.keys[-1]
        hot = (seq_extremes * self.sign) > threshold                   # [B, width]
        cols = hot.any(0).nonzero().flatten()
        if cols.numel() == 0:
            return
        cand = tokens[:, :, cols] * self.sign                             # [B, T, c]
        cand = cand.masked_fill(~hot[:, cols].unsqueeze(1), float("-inf"))
        pool = torch.cat([self.keys[:, cols], cand.reshape(-1, cols.numel())])
        self.keys[:, cols] = pool.topk(self.capacity, dim=0).values

    def merge(self, other: TailBuffer) -> None:
        pool = torch.cat([self.keys, other.keys])
        self.keys = pool.topk(self.capacity, dim=0).values

    def quantile(self, q: float, n_tokens: int) -> torch.Tensor:
        """Per neuron, the value with a fraction `q` of all tokens beyond it (on
        this buffer's side); NaN where the rank falls outside the buffer."""
        h = (n_tokens - 1) * q                       # position counted from the extreme end
        lo, hi = math.floor(h), math.ceil(h)
        if n_tokens == 0 or hi >= self.capacity:
            return torch.full((self.width,), float("nan"), device=self.keys.device)
        a, b = self.keys[lo], self.keys[hi]
        return ((a + (b - a) * (h - lo)) * self.sign).float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"keys": self.keys}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.keys = state["keys"]
