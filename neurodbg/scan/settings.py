"""Scan settings: everything that changes what an atlas contains. Their
fingerprint is stored in the atlas, which refuses a rerun with other settings."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

QUANTILES = (1e-3, 1e-4, 1e-5, 1e-6)


@dataclass(frozen=True)
class ScanSettings:
    sites: tuple[str, ...] = ("layers.*.mlp.act",)
    seq_len: int = 64
    batch_size: int = 8
    top_k: int = 20            # exemplars per neuron and polarity
    random_k: int = 10         # random exemplar sequences, shared by all neurons
    max_tokens: int | None = None   # stop after this many tokens (None: the whole corpus)
    # token values kept per neuron and side, twice: over all tokens (exact quantiles while
    # rank < capacity: 1e-4 up to 1.28M tokens, 1e-5 up to 12.8M) and over the every
    # `sample_every`-th-sequence sample (estimates for the shallower levels beyond that)
    tail_capacity: int = 128
    quantiles: tuple[float, ...] = QUANTILES
    skip_first: bool = True    # position 0 is the attention sink: outlier values shared by every sequence
    hist_bins: int = 128       # asinh-spaced bins, shared edges
    hist_scale: float = 0.01   # asinh(x / scale): linear near 0, logarithmic beyond
    hist_limit: float = 1e5
    # deterministic subsamples, by sequence index: the histogram is for display and its bins
    # cost ~20 operations per value, so it reads every 64th sequence (15k tokens per neuron in a
    # 1M-token scan); the sampled tails need more for their 1e-3 estimates
    hist_every: int = 64       # histogram from every n-th sequence
    sample_every: int = 16     # sampled tails from every n-th sequence
    logit_k: int = 10          # promoted and suppressed tokens per neuron
    bos: bool | None = None
    dedup: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sites"] = list(self.sites)
        data["quantiles"] = list(self.quantiles)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScanSettings:
        data = dict(data)
        data["sites"] = tuple(data["sites"])
        data["quantiles"] = tuple(data["quantiles"])
        return cls(**data)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def hist_edges(self) -> list[float]:
        """Bin edges in activation units (asinh-spaced, symmetric)."""
        top = math.asinh(self.hist_limit / self.hist_scale)
        step = 2 * top / self.hist_bins
        return [self.hist_scale * math.sinh(-top + i * step) for i in range(self.hist_bins + 1)]
