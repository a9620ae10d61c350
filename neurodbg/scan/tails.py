"""Exact tail quantiles from a bounded buffer: per neuron, the `capacity`
largest token-level values seen (a second instance keeps the smallest).

The buffer has room for 2 x capacity values. Tokens are appended only when
they beat the neuron's threshold (its capacity-th largest value at the last
compaction); a column is compacted back to its best `capacity` values only when
it would overflow, so the cost per batch is a comparison plus the few values
that pass. The kept set is exact: anything dropped by a compaction can never
reach the top `capacity`. A quantile whose rank lies inside the buffer is exact
(linear interpolation between order statistics, numpy's default); a deeper one
is reported as unavailable (NaN)."""

from __future__ import annotations

import math

import torch


class TailBuffer:
    def __init__(self, capacity: int, width: int, sign: int, device: torch.device | str = "cpu") -> None:
        self.capacity, self.width, self.sign = capacity, width, sign
        self.keys = torch.full((2 * capacity, width), float("-inf"), device=device)   # sign * value, unordered
        self.fill = torch.zeros(width, dtype=torch.long, device=device)
        self.threshold = torch.full((width,), float("-inf"), device=device)

    def update(self, tokens: torch.Tensor, seq_extremes: torch.Tensor) -> None:
        """tokens [B, T, width] token activations; seq_extremes [B, width] their per-sequence
        max (sign=+1) or min (sign=-1)."""
        keys, cols = self.candidates(tokens, seq_extremes)
        self.append(keys, cols)

    def candidates(self, tokens: torch.Tensor, seq_extremes: torch.Tensor, offset: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (key, column) pairs of `tokens` that beat their neuron's threshold, for
        columns `offset`..., in ascending column order; only sequences whose extreme
        passes are looked at token by token."""
        width = tokens.shape[-1]
        threshold = self.threshold[offset:offset + width]
        hot = (seq_extremes.T * self.sign > threshold.unsqueeze(1)).nonzero()   # [P, 2] (column, sequence)
        if hot.numel() == 0:
            empty = torch.empty(0, device=tokens.device)
            return empty, empty.long()
        cols, seqs = hot[:, 0], hot[:, 1]
        values = tokens[seqs, :, cols] * self.sign                     # [P, T]
        passing = (values > threshold[cols].unsqueeze(1)).nonzero()
        return values[passing[:, 0], passing[:, 1]], cols[passing[:, 0]] + offset

    def append(self, keys: torch.Tensor, cols: torch.Tensor) -> None:
        """Append (key, column) pairs, given in ascending column order (as `candidates` gives them)."""
        if keys.numel() == 0:
            return
        counts = torch.bincount(cols, minlength=self.width)
        if int(counts.max()) > self.capacity:
            # (early in a scan) only a column's best `capacity` new keys can matter
            order = torch.argsort(keys, descending=True, stable=True)
            keys, cols = keys[order], cols[order]
            order = torch.argsort(cols, stable=True)
            keys, cols = keys[order], cols[order]
            rank = torch.arange(cols.numel(), device=cols.device) - (torch.cumsum(counts, 0) - counts)[cols]
            keep = rank < self.capacity
            keys, cols = keys[keep], cols[keep]
            counts = counts.clamp(max=self.capacity)
        overflow = (self.fill + counts > 2 * self.capacity).nonzero().flatten()
        if overflow.numel():
            self._compact(overflow)
            keep = keys > self.threshold[cols]      # the threshold rose: drop what no longer passes
            keys, cols = keys[keep], cols[keep]
            counts = torch.bincount(cols, minlength=self.width)
        # now everything fits; slots only need a running index per column
        rank = torch.arange(cols.numel(), device=cols.device) - (torch.cumsum(counts, 0) - counts)[cols]
        self.keys[self.fill[cols] + rank, cols] = keys
        self.fill += counts

    def _compact(self, cols: torch.Tensor | None = None) -> None:
        cols = torch.arange(self.width, device=self.keys.device) if cols is None else cols
        best = self.keys[:, cols].topk(self.capacity, dim=0).values   # sorted, descending
        self.keys[:, cols] = float("-inf")
        self.keys[: self.capacity, cols] = best
        self.fill[cols] = self.capacity
        self.threshold[cols] = best[-1]

    def sorted_keys(self) -> torch.Tensor:
        """[capacity, width]: the best keys, descending."""
        return self.keys.topk(self.capacity, dim=0).values

    def merge(self, other: TailBuffer) -> None:
        pool = torch.cat([self.sorted_keys(), other.sorted_keys()])
        best = pool.topk(self.capacity, dim=0).values
        self.keys = torch.cat([best, torch.full_like(best, float("-inf"))])
        self.fill = torch.full_like(self.fill, self.capacity)
        self.threshold = best[-1].clone()

    def holds_rank(self, q: float, n_tokens: int) -> bool:
        return n_tokens > 0 and math.ceil((n_tokens - 1) * q) < self.capacity

    def quantile(self, q: float, n_tokens: int) -> torch.Tensor:
        """Per neuron, the value with a fraction `q` of all tokens beyond it (on
        this buffer's side); NaN where the rank falls outside the buffer."""
        h = (n_tokens - 1) * q                       # position counted from the extreme end
        lo, hi = math.floor(h), math.ceil(h)
        if n_tokens == 0 or hi >= self.capacity:
            return torch.full((self.width,), float("nan"), device=self.keys.device)
        ordered = self.sorted_keys()
        a, b = ordered[lo], ordered[hi]
        return ((a + (b - a) * (h - lo)) * self.sign).float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"keys": self.sorted_keys()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        best = state["keys"]
        self.keys = torch.cat([best, torch.full_like(best, float("-inf"))])
        self.fill = torch.full((self.width,), self.capacity, dtype=torch.long, device=best.device)
        self.threshold = best[-1].clone()
