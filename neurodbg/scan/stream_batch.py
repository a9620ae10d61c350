"""`StreamBatch`: what every scanned site of one batch shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neurodbg.scan.random_exemplars import hash_ids


@dataclass
class StreamBatch:
    """What every site of one batch of the stream (images, or sequences) shares: ids, hashes,
    and per item whether the sampled tails (bit 0) and the histogram (bit 1) read it."""

    ids: torch.Tensor      # [B] int64
    hashes: torch.Tensor   # [B] int64
    flags: torch.Tensor    # [B] uint8
    sampled: int           # images the sampled tails read
    shown: int             # images the histogram reads
    first: int             # the smallest index
    last: int              # the largest index

    @classmethod
    def of(cls, indices: list[int], sample_every: int, hist_every: int) -> StreamBatch:
        ids = torch.tensor(indices, dtype=torch.long)
        array = ids.numpy()
        sampled, shown = array % sample_every == 0, array % hist_every == 0
        flags = torch.from_numpy(sampled.astype(np.uint8) | (shown.astype(np.uint8) << 1))
        return cls(ids, hash_ids(ids), flags, int(sampled.sum()), int(shown.sum()), min(indices, default=0),
                   max(indices, default=-1))
