"""Streaming top-k exemplar sequences per neuron, with each exemplar's per-token
activations (fp16) so a UI can highlight tokens.

The order is total and deterministic: by score (descending), then by sequence
index (ascending). So the top-k of a union does not depend on how the stream
was split into batches or shards, which makes resumed and distributed scans
give identical exemplars.

Keys and ids are kept in rank order, but the per-token activations stay where
they were written: `slots[neuron, rank]` says which row of `store` holds them.
A merge then moves only the activations of sequences that enter (usually a
handful per batch), not the whole ranked list of every affected neuron. Keys,
ids and slots are neuron-major ([width, k]), so a merge reads and writes each
affected neuron's ranks contiguously (rank-major, every rank was a separate cache
line: the merge measured ~35% slower)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

FP16_MAX = 65504.0

# fetch(rows, local_cols) -> [E, length]: the activations of candidate `rows[e]` for column `local_cols[e]`
Fetch = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _fp16(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-FP16_MAX, FP16_MAX).half()


@dataclass
class Candidates:
    """Pairs that may enter an `ExemplarSet`: column (ascending), row in the batch, signed
    key, activations."""

    cols: torch.Tensor   # [P]
    rows: torch.Tensor   # [P]
    keys: torch.Tensor   # [P]
    acts: torch.Tensor   # [P, length] fp16

    @staticmethod
    def side_by_side(parts: list[tuple[int, Candidates]]) -> Candidates:
        """The candidates of sets placed side by side, each (first column, candidates)."""
        return Candidates(torch.cat([c.cols + start for start, c in parts]), torch.cat([c.rows for _, c in parts]),
                          torch.cat([c.keys for _, c in parts]), torch.cat([c.acts for _, c in parts]))


class ExemplarSet:
    """Top-`k` sequences per neuron by `sign * per-sequence extreme`.

    sign=+1 keeps the sequences with the highest max; sign=-1 those with the lowest min."""

    def __init__(self, k: int, width: int, length: int, sign: int, device: torch.device | str = "cpu") -> None:
        self.k, self.width, self.length, self.sign = k, width, length, sign
        self._keys = torch.full((width, k), float("-inf"), device=device)   # sign * value, ranked
        self._ids = torch.full((width, k), -1, dtype=torch.long, device=device)
        self._slots = torch.arange(k, device=device).repeat(width, 1)
        self.store = torch.zeros((k, width, length), dtype=torch.float16, device=device)
        self.last_id = -1   # the largest sequence id merged so far (for the one-sort fast path)

    @property
    def keys(self) -> torch.Tensor:
        """[k, width]: sign * value, in rank order (a view)."""
        return self._keys.T

    @property
    def ids(self) -> torch.Tensor:
        """[k, width]: the sequence ids, in rank order (a view)."""
        return self._ids.T

    def lowest_keys(self) -> torch.Tensor:
        """[width]: each neuron's lowest kept key, which a candidate must reach to enter."""
        return self._keys[:, -1]

    def entry_keys(self, seq_ids: torch.Tensor) -> torch.Tensor:
        """[width]: the key a candidate from sequences `seq_ids` must reach to enter. A tie with the
        lowest kept key enters only if its id is smaller; when every id of the batch is beyond
        every kept one, no tie can win and the bar is raised past it (after a ReLU every image
        ties at a minimum of 0: copying all their activations only to drop them cost more than
        the rest of the statistics)."""
        lowest = self.lowest_keys()
        if seq_ids.numel() and int(seq_ids.min()) > int(self._ids.max()):
            return torch.nextafter(lowest, torch.full_like(lowest, float("inf")))
        return lowest

    @property
    def values(self) -> torch.Tensor:
        return self.keys * self.sign

    @property
    def acts(self) -> torch.Tensor:
        """[k, width, length]: per-token activations in rank order."""
        return torch.gather(self.store, 0, self._slots.T.unsqueeze(-1).expand(-1, -1, self.length))

    def update(self, scores: torch.Tensor, seq_ids: torch.Tensor, acts: torch.Tensor) -> None:
        """scores [B, width] per-sequence extremes (not signed); seq_ids [B]; acts
        [B, length, width] per-token activations of the same sequences."""
        self.absorb(self.candidates(scores, acts, seq_ids), seq_ids)

    def candidates(self, scores: torch.Tensor, acts: torch.Tensor, seq_ids: torch.Tensor | None = None
                   ) -> Candidates:
        """The (sequence, neuron) pairs of a batch that may enter: scores [B, width]
        per-sequence extremes, acts [B, length, width]; only the activations of those
        pairs are copied (so candidates of several sets can be merged at once). With the
        batch's `seq_ids`, ties that must lose are left out (`entry_keys`)."""
        keys = scores if self.sign > 0 else scores.neg()
        bar = self.lowest_keys() if seq_ids is None else self.entry_keys(seq_ids.to(keys.device))
        enters = bar.unsqueeze(1) <= keys.T                  # [width, B]; ties may enter
        cols, rows = enters.nonzero().unbind(1)         # by column
        return Candidates(cols, rows, keys[rows, cols], _fp16(acts[rows, :, cols]))

    def absorb(self, found: Candidates, seq_ids: torch.Tensor) -> None:
        """Merge the candidates of one batch of sequences `seq_ids` [B]."""
        if found.cols.numel() == 0:
            return
        seq_ids = seq_ids.to(self.keys.device)
        cols, local = torch.unique_consecutive(found.cols, return_inverse=True)   # found.cols is sorted
        # a batch of ascending ids beyond all merged ones: ties between equal keys already sit
        # in id order after a stable sort by key, so one sort suffices
        ascending = bool(seq_ids.min() > self.last_id) and bool((seq_ids[1:] > seq_ids[:-1]).all())
        if seq_ids.numel() > self.k:
            keys, ids, where = self._best_per_column(found, local, cols.numel(), seq_ids, ascending)
        else:
            keys = torch.full((cols.numel(), seq_ids.numel()), float("-inf"), device=cols.device)
            keys[local, found.rows] = found.keys   # pairs not among the candidates cannot enter: -inf
            where = torch.full(keys.shape, -1, dtype=torch.long, device=cols.device)
            where[local, found.rows] = torch.arange(found.rows.numel(), device=cols.device)
            ids = seq_ids.view(1, -1).expand(cols.numel(), -1)

        def fetch(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return found.acts[where[c, r]]

        self._merge(cols, keys, ids, fetch, ascending)
        self.last_id = max(self.last_id, int(seq_ids.max()))

    def _best_per_column(self, found: Candidates, local: torch.Tensor, n_cols: int, seq_ids: torch.Tensor,
                         ascending: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch of more than k sequences: per column, only its best k candidates (by key
        descending, then id) can enter, so the merge sorts 2k rows per column instead of
        k + batch (at batch 1024 on a GPU the dense sort was the merge's largest cost).
        Returns keys, ids and candidate indices [n_cols, k], padded with -inf keys whose ids
        lose every tie."""
        cand_ids = seq_ids[found.rows]
        # candidates come by column, then row; stable sorts keep that order among equals, so
        # sorting by id first is needed only when rows are not in id order
        order = torch.arange(local.numel(), device=local.device) if ascending else torch.argsort(cand_ids, stable=True)
        order = order[torch.argsort(found.keys[order], descending=True, stable=True)]
        order = order[torch.argsort(local[order], stable=True)]   # by column, key desc, id asc
        col = local[order]
        counts = torch.bincount(col, minlength=n_cols)
        rank = torch.arange(col.numel(), device=col.device) - (torch.cumsum(counts, 0) - counts)[col]
        keep = rank < self.k
        order, rank, col = order[keep], rank[keep], col[keep]
        keys = torch.full((n_cols, self.k), float("-inf"), device=col.device)
        keys[col, rank] = found.keys[order]
        ids = torch.full(keys.shape, torch.iinfo(torch.long).max, dtype=torch.long, device=col.device)
        ids[col, rank] = cand_ids[order]
        where = torch.full(keys.shape, -1, dtype=torch.long, device=col.device)
        where[col, rank] = order
        return keys, ids, where

    def merge(self, other: ExemplarSet) -> None:
        def fetch(rows: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
            return other.store[other._slots[local, rows], local]

        self._merge(torch.arange(self.width, device=self._keys.device), other._keys, other._ids, fetch)
        self.last_id = max(self.last_id, other.last_id)

    def _merge(self, cols: torch.Tensor, keys: torch.Tensor, ids: torch.Tensor, fetch: Fetch,
               ids_ascending: bool = False) -> None:
        """Merge candidates for columns `cols`: keys/ids [c, n]; `fetch` gives their activations."""
        k = self.k
        cand_keys = torch.cat([self._keys[cols], keys], dim=1)
        cand_ids = torch.cat([self._ids[cols], ids], dim=1)
        if ids_ascending:   # kept ranks are in (key desc, id asc) order and new ids come after them
            order = torch.argsort(cand_keys, dim=1, descending=True, stable=True)[:, :k]
        else:               # lexicographic sort: by id ascending, then (stably) by key descending
            by_id = torch.argsort(cand_ids, dim=1, stable=True)
            by_key = torch.argsort(torch.gather(cand_keys, 1, by_id), dim=1, descending=True, stable=True)
            order = torch.gather(by_id, 1, by_key)[:, :k]                   # [c, k] candidate positions
        self._keys[cols] = torch.gather(cand_keys, 1, order)
        self._ids[cols] = torch.gather(cand_ids, 1, order)
        # entrants take over the store rows of the ranks that dropped out, column by column
        old_slots = self._slots[cols]
        kept = torch.zeros(cand_keys.shape, dtype=torch.bool, device=cols.device).scatter_(1, order, True)[:, :k]
        freed_col, freed_rank = (~kept).nonzero().unbind(1)          # grouped by column
        entered_col, entered_rank = (order >= k).nonzero().unbind(1)  # grouped by column, same counts
        slots = torch.gather(old_slots, 1, order.clamp(max=k - 1))
        if entered_col.numel():
            freed = old_slots[freed_col, freed_rank]
            slots[entered_col, entered_rank] = freed
            values = fetch(order[entered_col, entered_rank] - k, entered_col)
            self.store[freed, cols[entered_col]] = _fp16(values)
        self._slots[cols] = slots

    def state_dict(self) -> dict[str, torch.Tensor]:
        # (copies in the saved [k, width] layout: the keys may be views of a joined set, and a
        # saved view saves all of it)
        return {"keys": self.keys.clone(memory_format=torch.contiguous_format),
                "ids": self.ids.clone(memory_format=torch.contiguous_format), "acts": self.acts}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._keys, self._ids = state["keys"].T.contiguous(), state["ids"].T.contiguous()
        self.store = state["acts"]
        self._slots = torch.arange(self.k, device=self._keys.device).repeat(self.width, 1)
        self.last_id = int(self._ids.max()) if self._ids.numel() else -1

    @classmethod
    def joined(cls, parts: list[ExemplarSet]) -> ExemplarSet:
        """One set over the columns of all `parts` side by side (so one batch of several
        layers is one merge); each part is rebound to views of it, so stays current."""
        first = parts[0]
        joined = cls(first.k, sum(p.width for p in parts), first.length, first.sign, first._keys.device)
        joined._keys = torch.cat([p._keys for p in parts])
        joined._ids = torch.cat([p._ids for p in parts])
        joined._slots = torch.cat([p._slots for p in parts])
        joined.store = torch.cat([p.store for p in parts], dim=1)
        joined.last_id = max(p.last_id for p in parts)
        start = 0
        for p in parts:
            part = slice(start, start + p.width)
            p._keys, p._ids, p._slots = joined._keys[part], joined._ids[part], joined._slots[part]
            p.store = joined.store[:, part]
            start += p.width
        return joined
