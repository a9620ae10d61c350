"""Streaming top-k exemplar sequences per neuron, with each exemplar's per-token
activations (fp16) so a UI can highlight tokens.

The order is total and deterministic: by score (descending), then by sequence
index (ascending). So the top-k of a union does not depend on how the stream
was split into batches or shards, which makes resumed and distributed scans
give identical exemplars."""

from __future__ import annotations

import torch

FP16_MAX = 65504.0


class ExemplarSet:
    """Top-`k` sequences per neuron by `sign * per-sequence extreme`.

    sign=+1 keeps the sequences with the highest max; sign=-1 those with the lowest min."""

    def __init__(self, k: int, width: int, length: int, sign: int, device: torch.device | str = "cpu") -> None:
        self.k, self.width, self.length, self.sign = k, width, length, sign
        self.keys = torch.full((k, width), float("-inf"), device=device)   # sign * value
        self.ids = torch.full((k, width), -1, dtype=torch.long, device=device)
        self.acts = torch.zeros((k, width, length), dtype=torch.float16, device=device)
        self.last_id = -1   # the largest sequence id merged so far (for the one-sort fast path)

    @property
    def values(self) -> torch.Tensor:
        return self.keys * self.sign

    def update(self, scores: torch.Tensor, seq_ids: torch.Tensor, acts: torch.Tensor) -> None:
        """scores [B, width] per-sequence extremes (not signed); seq_ids [B]; acts
        [B, length, width] per-token activations of the same sequences."""
        keys = scores * self.sign
        # only columns where some new sequence can enter need work (ties may enter: >=)
        cols = (keys >= self.keys[-1]).any(0).nonzero().flatten()
        if cols.numel() == 0:
            return
        # a batch of ascending ids beyond all merged ones: ties between equal keys already sit
        # in id order after a stable sort by key, so one sort suffices
        ascending = bool(seq_ids.min() > self.last_id) and bool((seq_ids[1:] > seq_ids[:-1]).all())
        self._merge(cols, keys[:, cols], seq_ids.view(-1, 1).expand(-1, cols.numel()),
                    acts.index_select(2, cols).permute(0, 2, 1), ids_ascending=ascending)
        self.last_id = max(self.last_id, int(seq_ids.max()))

    def merge(self, other: ExemplarSet) -> None:
        cols = torch.arange(self.width, device=self.keys.device)
        self._merge(cols, other.keys, other.ids, other.acts)
        self.last_id = max(self.last_id, other.last_id)

    def _merge(self, cols: torch.Tensor, keys: torch.Tensor, ids: torch.Tensor, acts: torch.Tensor,
               ids_ascending: bool = False) -> None:
        """Merge candidates for columns `cols`: keys/ids [n, c], acts [n, c, length]."""
        cand_keys = torch.cat([self.keys[:, cols], keys])
        cand_ids = torch.cat([self.ids[:, cols], ids])
        if ids_ascending:   # kept rows are in (key desc, id asc) order and new ids come after them
            order = torch.argsort(cand_keys, dim=0, descending=True, stable=True)[: self.k]
        else:               # lexicographic sort: by id ascending, then (stably) by key descending
            by_id = torch.argsort(cand_ids, dim=0, stable=True)
            by_key = torch.argsort(torch.gather(cand_keys, 0, by_id), dim=0, descending=True, stable=True)
            order = torch.gather(by_id, 0, by_key)[: self.k]                # [k, c]
        self.keys[:, cols] = torch.gather(cand_keys, 0, order)
        self.ids[:, cols] = torch.gather(cand_ids, 0, order)
        pool = torch.cat([self.acts[:, cols], acts.clamp(-FP16_MAX, FP16_MAX).half()])   # [k+n, c, L]
        self.acts[:, cols] = torch.gather(pool, 0, order.unsqueeze(-1).expand(-1, -1, self.length))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"keys": self.keys, "ids": self.ids, "acts": self.acts}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.keys, self.ids, self.acts = state["keys"], state["ids"], state["acts"]
        self.last_id = int(self.ids.max()) if self.ids.numel() else -1
