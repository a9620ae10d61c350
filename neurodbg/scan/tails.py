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

# above this fraction of (block, neuron) pairs passing, a batch is merged densely
CROWDED = 0.5


def compare_in_place(tokens: torch.Tensor) -> bool:
    """Whether `TailBuffer.hot_blocks` compares block extremes in their own layout (GPU)
    or transposed to neuron-major (CPU); both give the same candidates in the same order."""
    return tokens.is_cuda


class TailBuffer:
    def __init__(self, capacity: int, width: int, sign: int, device: torch.device | str = "cpu") -> None:
        self.capacity, self.width, self.sign = capacity, width, sign
        # [width, 2 x capacity]: sign * value, unordered; neuron-major, so a compaction reads
        # and writes each neuron's values contiguously (it took a strided gather, then a top-k
        # down the columns, several times slower on CPU)
        self.keys = torch.full((width, 2 * capacity), float("-inf"), device=device)
        self.fill = torch.zeros(width, dtype=torch.long, device=device)
        # the threshold in activation units (sign * the key threshold: the capacity-th best key at
        # the last compaction), so comparisons need no negated copies on the lower side
        self.bound = torch.full((width,), -sign * float("inf"), device=device)

    def update(self, tokens: torch.Tensor, block_extremes: torch.Tensor) -> None:
        """tokens [B, blocks, size, width]: token activations, in blocks of `size` tokens;
        block_extremes [B, blocks, width]: each block's max (sign=+1) or min (sign=-1)."""
        hot = self.hot_blocks(tokens, block_extremes)
        if hot is not None:
            self.append(*self.passing(*hot))

    def hot_blocks(self, tokens: torch.Tensor, block_extremes: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The blocks whose extreme beats its neuron's threshold, as their token values
        [P, size] and columns [P] (ascending); `passing` then picks the tokens that beat it.
        The two steps are apart so that a scanner can pick the tokens of all layers' blocks
        at once (a handful of operations per batch instead of per layer). Early in a scan,
        when a batch brings more than `capacity` tokens per column and most blocks pass,
        the batch is merged at once instead (a dense top-k beats sorting millions of
        candidates) and None is returned."""
        batch, n_blocks, size, _ = tokens.shape
        in_place = compare_in_place(tokens)
        if in_place:
            # compare in place (reads along the neurons, coalesced), then order the few hot
            # blocks by column; comparing the transposed view below read memory with a stride
            # of the width, several times slower on a GPU at large batches
            hot = self._beats(block_extremes, self.bound)
            seqs, blocks, cols = hot.nonzero().unbind(1)
        else:
            # on a CPU the transposed compare costs no more, and gives column order directly
            hot = self._beats(block_extremes.permute(2, 0, 1), self.bound.view(-1, 1, 1))   # [width, B, blocks]
            cols, seqs, blocks = hot.nonzero().unbind(1)
        if cols.numel() > CROWDED * hot.numel() and batch * n_blocks * size > self.capacity:
            self._absorb(tokens.reshape(-1, self.width))
            return None
        if in_place:
            order = torch.argsort(cols, stable=True)                   # then by sequence, block: as on a CPU
            seqs, blocks, cols = seqs[order], blocks[order], cols[order]
        return tokens[seqs, blocks, :, cols], cols

    def passing(self, values: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (key, column) pairs among hot blocks' `values` [P, size] (columns `cols`, ascending)
        that beat their neuron's threshold, in that order, for `append`."""
        rows, at = self._beats(values, self.bound[cols].unsqueeze(1)).nonzero().unbind(1)
        keys = values[rows, at]
        return (keys if self.sign > 0 else keys.neg_()), cols[rows]

    def _beats(self, values: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        return (values > bound) if self.sign > 0 else (values < bound)

    def _absorb(self, tokens: torch.Tensor) -> None:
        """Merge all of `tokens` [n, width] at once."""
        flat = tokens * self.sign
        pool = torch.cat([self.keys, flat.topk(min(self.capacity, flat.shape[0]), dim=0).values.T], dim=1)
        best = pool.topk(self.capacity, dim=1).values
        self.keys[:, self.capacity:] = float("-inf")
        self.keys[:, : self.capacity] = best
        self.fill.fill_(self.capacity)
        self.bound.copy_(best[:, -1] * self.sign)

    def append(self, keys: torch.Tensor, cols: torch.Tensor) -> None:
        """Append (key, column) pairs, given in ascending column order (as `passing` gives them)."""
        if keys.numel() == 0:
            return
        counts = torch.bincount(cols, minlength=self.width)
        if int(counts.max()) > self.capacity:
            # (early in a scan) only a column's best `capacity` new keys can matter: sort
            # just the columns that brought more, then append the two groups in turn
            crowded = (counts > self.capacity)[cols]
            self.append(keys[~crowded], cols[~crowded])
            keys, cols = keys[crowded], cols[crowded]
            order = torch.argsort(keys, descending=True, stable=True)
            keys, cols = keys[order], cols[order]
            order = torch.argsort(cols, stable=True)
            keys, cols = keys[order], cols[order]
            counts = torch.bincount(cols, minlength=self.width)
            rank = torch.arange(cols.numel(), device=cols.device) - (torch.cumsum(counts, 0) - counts)[cols]
            keep = rank < self.capacity
            keys, cols = keys[keep], cols[keep]
            counts = counts.clamp(max=self.capacity)
        overflow = (self.fill + counts > 2 * self.capacity).nonzero().flatten()
        if overflow.numel():
            self._compact(overflow)
            keep = keys > self.bound[cols] * self.sign   # the threshold rose: drop what no longer passes
            keys, cols = keys[keep], cols[keep]
            counts = torch.bincount(cols, minlength=self.width)
        # now everything fits; slots only need a running index per column
        rank = torch.arange(cols.numel(), device=cols.device) - (torch.cumsum(counts, 0) - counts)[cols]
        self.keys[cols, self.fill[cols] + rank] = keys
        self.fill += counts

    def _compact(self, cols: torch.Tensor) -> None:
        """Keep only the best `capacity` keys of columns `cols`, and raise their thresholds."""
        # (unsorted: the buffer keeps no order, and a full sort took twice as long)
        best = self.keys[cols].topk(self.capacity, dim=1, sorted=False).values
        self.keys[cols] = torch.cat([best, torch.full_like(best, float("-inf"))], dim=1)
        self.fill[cols] = self.capacity
        # the new threshold is the smallest kept key, with a broken model's NaN counted as the
        # largest, as topk ranks it (amin alone would return the NaN)
        self.bound[cols] = best.masked_fill(best.isnan(), float("inf")).amin(1) * self.sign

    def sorted_keys(self) -> torch.Tensor:
        """[capacity, width]: the best keys, descending."""
        return self.keys.topk(self.capacity, dim=1).values.T

    def merge(self, other: TailBuffer) -> None:
        pool = torch.cat([self.sorted_keys(), other.sorted_keys()])
        best = pool.topk(self.capacity, dim=0).values
        self._rebuild(best)

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
        return {"keys": self.sorted_keys().contiguous()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._rebuild(state["keys"])

    def _rebuild(self, best: torch.Tensor) -> None:
        """Hold exactly `best` [capacity, width] (sorted, descending)."""
        self.keys = torch.cat([best.T, torch.full_like(best.T, float("-inf"))], dim=1).contiguous()
        self.fill = torch.full((self.width,), self.capacity, dtype=torch.long, device=best.device)
        self.bound = best[-1] * self.sign

    @classmethod
    def joined(cls, parts: list[TailBuffer]) -> TailBuffer:
        """One buffer over the columns of all `parts` side by side (so one batch of several
        layers is one append); each part is rebound to views of it, so stays current."""
        first = parts[0]
        joined = cls(first.capacity, sum(p.width for p in parts), first.sign, first.keys.device)
        joined.keys = torch.cat([p.keys for p in parts])
        joined.fill = torch.cat([p.fill for p in parts])
        joined.bound = torch.cat([p.bound for p in parts])
        start = 0
        for p in parts:
            part = slice(start, start + p.width)
            p.keys, p.fill, p.bound = joined.keys[part], joined.fill[part], joined.bound[part]
            start += p.width
        return joined
