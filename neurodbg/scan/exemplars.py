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

    @property
    def values(self) -> torch.Tensor:
        return self.keys * self.sign

    def update(self, scores: torch.Tensor, seq_ids: torch.Tensor, acts: torch.Tensor | None) -> None:
        """scores [B, width] per-sequence extremes (not signed); seq_ids [B]; acts
        [B, length, width] per-token activations of the same sequences (None when merging)."""
        self._merge(scores * self.sign, seq_ids.view(-1, 1).expand_as(scores),
                    None if acts is None else acts.permute(0, 2, 1))

    def merge(self, other: ExemplarSet) -> None:
        self._merge(other.keys, other.ids, other.acts.float())

    def _merge(self, keys: torch.Tensor, ids: torch.Tensor, acts: torch.Tensor | None) -> None:
        cand_keys = torch.cat([self.keys, keys])
        cand_ids = torch.cat([self.ids, ids])
        # lexicographic sort: by id ascending, then (stably) by key descending
        by_id = torch.argsort(cand_ids, dim=0, stable=True)
        by_key = torch.argsort(torch.gather(cand_keys, 0, by_id), dim=0, descending=True, stable=True)
        order = torch.gather(by_id, 0, by_key)[: self.k]
        moved = (order != torch.arange(self.k, device=order.device).view(-1, 1)).any(0)
        if not bool(moved.any()):
            return
        cols = moved.nonzero().flatten()
        self.keys = torch.gather(cand_keys, 0, order)
        self.ids = torch.gather(cand_ids, 0, order)
        if acts is None:
            return
        sub = order[:, cols]                                            # [k, c]
        pool = torch.cat([self.acts[:, cols].float(), acts[:, cols].float()])   # [k+B, c, L]
        picked = torch.gather(pool, 0, sub.unsqueeze(-1).expand(-1, -1, self.length))
        self.acts[:, cols] = picked.clamp(-FP16_MAX, FP16_MAX).half()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"keys": self.keys, "ids": self.ids, "acts": self.acts}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.keys, self.ids, self.acts = state["keys"], state["ids"], state["acts"]
