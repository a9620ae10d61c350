"""A fixed, deterministic sample of "random" sequences shared by all neurons:
the `k` sequences whose hashed index is smallest. Being a pure function of the
indices, the sample is the same however the stream is batched or sharded."""

from __future__ import annotations

import numpy as np
import torch

MASK64 = (1 << 64) - 1


def index_hash(index: int, seed: int = 0) -> int:
    """splitmix64 of the index, folded to a non-negative int63."""
    z = (index + 0x9E3779B97F4A7C15 * (seed + 1)) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return (z ^ (z >> 31)) >> 1


def hash_ids(seq_ids: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """`index_hash` of every id at once (numpy's uint64 arithmetic wraps as the mask does; one
    Python call per id cost ~0.3 ms a batch of 256 images, a tenth of a small CNN's forward)."""
    with np.errstate(over="ignore"):
        z = seq_ids.cpu().numpy().astype(np.uint64) + np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) & MASK64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return torch.from_numpy(((z ^ (z >> np.uint64(31))) >> np.uint64(1)).astype(np.int64))


class RandomExemplars:
    """Hashes and ids are kept in hash order; the activations stay where they were written
    (`slots[rank]` is the row of `store` holding them), so a sequence entering the sample
    writes only its own row, not the whole [k, width, length] store (which each of the
    scan's rare entries used to rewrite, for every layer)."""

    def __init__(self, k: int, width: int, length: int, device: torch.device | str = "cpu") -> None:
        self.k, self.width, self.length = k, width, length
        self.hashes = torch.full((k,), 2**63 - 1, dtype=torch.long, device=device)
        self.ids = torch.full((k,), -1, dtype=torch.long, device=device)
        self.slots = torch.arange(k, device=device)
        self.store = torch.zeros((k, width, length), dtype=torch.float16, device=device)

    @property
    def acts(self) -> torch.Tensor:
        """[k, width, length] fp16, in hash order."""
        return self.store[self.slots]

    def update(self, seq_ids: torch.Tensor, acts: torch.Tensor, hashes: torch.Tensor | None = None) -> None:
        """seq_ids [B]; acts [B, length, width]; hashes of seq_ids when already known."""
        if hashes is None:
            hashes = hash_ids(seq_ids)
        # only a hash below the largest kept one can enter (a tie loses to the kept one), so
        # only those sequences' activations are converted and merged: a batch holds many.
        # Decided in Python: a few values, and most batches of a long scan have no entrant
        limit = int(self.hashes.max())
        rows = [row for row, value in enumerate(hashes.tolist()) if value < limit]
        if not rows:
            return
        enters = torch.tensor(rows, device=self.hashes.device)
        self._merge(hashes.to(enters.device)[enters], seq_ids.to(enters.device)[enters], acts[enters].permute(0, 2, 1))

    def merge(self, other: RandomExemplars) -> None:
        self._merge(other.hashes, other.ids, other.acts)

    def _merge(self, hashes: torch.Tensor, ids: torch.Tensor, acts: torch.Tensor) -> None:
        """Candidates `hashes`, `ids` [e] with activations `acts` [e, width, length]."""
        k = self.k
        cand = torch.cat([self.hashes, hashes])
        order = torch.argsort(cand, stable=True)[:k]
        kept = torch.zeros(cand.numel(), dtype=torch.bool, device=cand.device).index_fill_(0, order, True)
        entered = order >= k
        # entrants take the store rows of the ranks that dropped out, in rank order
        freed = self.slots[~kept[:k]]
        slots = self.slots[order.clamp(max=k - 1)]
        slots[entered] = freed
        self.store[freed] = acts[order[entered] - k].clamp(-65504.0, 65504.0).half()
        # in place: a joined set's parts share these (see `joined`)
        self.hashes.copy_(cand[order])
        self.ids.copy_(torch.cat([self.ids, ids])[order])
        self.slots.copy_(slots)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"hashes": self.hashes.clone(), "ids": self.ids.clone(), "acts": self.acts}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.hashes, self.ids, self.store = state["hashes"], state["ids"], state["acts"]
        self.slots = torch.arange(self.k, device=self.hashes.device)

    @classmethod
    def joined(cls, parts: list[RandomExemplars]) -> RandomExemplars:
        """One sample over the columns of all `parts` side by side (they hold the same
        sequences: the sample depends on indices alone); each part's store is rebound to a
        view of it and its order to the joined one, so stays current."""
        first = parts[0]
        joined = cls(first.k, sum(p.width for p in parts), first.length, first.hashes.device)
        joined.hashes, joined.ids = first.hashes.clone(), first.ids.clone()
        joined.store = torch.cat([p.acts for p in parts], dim=1)   # (each part's rows in hash order)
        joined.slots = torch.arange(first.k, device=first.hashes.device)
        start = 0
        for p in parts:
            p.hashes, p.ids, p.slots = joined.hashes, joined.ids, joined.slots
            p.store = joined.store[:, start:start + p.width]
            start += p.width
        return joined
