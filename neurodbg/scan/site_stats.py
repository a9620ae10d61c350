"""All streaming statistics of one site (one layer's neurons), updated batch by
batch on the model's device. Memory is fixed by the settings, not the corpus."""

from __future__ import annotations

import math
from typing import Any

import torch

from neurodbg.scan.exemplars import ExemplarSet
from neurodbg.scan.random_exemplars import RandomExemplars
from neurodbg.scan.settings import ScanSettings
from neurodbg.scan.tails import TailBuffer


class SiteStats:
    def __init__(self, width: int, settings: ScanSettings, device: torch.device | str = "cpu",
                 defer_tails: bool = False) -> None:
        s = settings
        # With defer_tails the owner (the Scanner) feeds all sites' tail candidates into
        # one combined buffer per batch and copies the result back here (`pending`).
        self.defer_tails = defer_tails
        self.pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.width, self.settings = width, s
        length = s.seq_len
        self.top = ExemplarSet(s.top_k, width, length, +1, device)
        self.bottom = ExemplarSet(s.top_k, width, length, -1, device)
        self.random = RandomExemplars(s.random_k, width, length, device)
        self.upper = TailBuffer(s.tail_capacity, width, +1, device)
        self.lower = TailBuffer(s.tail_capacity, width, -1, device)
        self.total = torch.zeros(width, dtype=torch.float64, device=device)
        self.total_sq = torch.zeros(width, dtype=torch.float64, device=device)
        self.active = torch.zeros(width, dtype=torch.long, device=device)
        self.hist = torch.zeros((width, s.hist_bins), dtype=torch.long, device=device)
        self.n_tokens = 0
        self.n_hist_tokens = 0
        self._hist_top = math.asinh(s.hist_limit / s.hist_scale)
        self._hist_offsets = torch.arange(width, device=device) * s.hist_bins

    def update(self, acts: torch.Tensor, seq_ids: torch.Tensor, hashes: torch.Tensor | None = None) -> None:
        """acts [B, L, width] (any float dtype) for sequences `seq_ids` [B]; `hashes`
        (of the ids, for the random sample) when the caller already has them."""
        acts = acts.detach().float()
        counted = acts[:, 1:] if self.settings.skip_first else acts
        # (amax and amin separately are ~10x faster than aminmax on CPU here)
        hi, lo = counted.amax(1), counted.amin(1)                     # per-sequence extremes [B, width]
        self.top.update(hi, seq_ids, acts)
        self.bottom.update(lo, seq_ids, acts)
        self.random.update(seq_ids, acts, hashes)
        if self.defer_tails:
            self.pending = (counted, hi, lo)
        else:
            self.upper.update(counted, hi)
            self.lower.update(counted, lo)
        flat = counted.reshape(-1, self.width)
        # per-batch sums in float32 over a few hundred tokens (as matrix products, the
        # fastest reductions on CPU here), accumulated in float64
        ones = torch.ones(1, flat.shape[0], dtype=flat.dtype, device=flat.device)
        self.total += (ones @ flat)[0].double()
        self.total_sq += (ones @ (flat * flat))[0].double()
        self.active += (ones @ torch.relu(flat).sign_())[0].round().long()
        self.n_tokens += flat.shape[0]
        every = self.settings.hist_every
        sample = (seq_ids % every == 0).nonzero().flatten()
        if sample.numel():
            self._histogram(counted[sample.to(counted.device)].reshape(-1, self.width))

    def _histogram(self, flat: torch.Tensor) -> None:
        s = self.settings
        step = 2 * self._hist_top / s.hist_bins
        u = torch.asinh(flat / s.hist_scale)
        idx = ((u + self._hist_top) / step).floor_().clamp_(0, s.hist_bins - 1).long() + self._hist_offsets
        self.hist += torch.bincount(idx.view(-1), minlength=self.width * s.hist_bins).view(self.width, -1)
        self.n_hist_tokens += flat.shape[0]

    def merge(self, other: SiteStats) -> None:
        """Fold in the statistics of a disjoint part of the stream (another shard)."""
        self.top.merge(other.top)
        self.bottom.merge(other.bottom)
        self.random.merge(other.random)
        self.upper.merge(other.upper)
        self.lower.merge(other.lower)
        self.total += other.total
        self.total_sq += other.total_sq
        self.active += other.active
        self.hist += other.hist
        self.n_tokens += other.n_tokens
        self.n_hist_tokens += other.n_hist_tokens

    # -- derived ----------------------------------------------------------------------------
    def mean(self) -> torch.Tensor:
        return self.total / max(self.n_tokens, 1)

    def std(self) -> torch.Tensor:
        n = max(self.n_tokens, 1)
        var = (self.total_sq / n - self.mean().square()).clamp_min(0)
        return var.sqrt()

    def frac_active(self) -> torch.Tensor:
        return self.active.double() / max(self.n_tokens, 1)

    def quantiles(self) -> dict[str, torch.Tensor]:
        """Upper ('q+1e-05': value exceeded by that fraction of tokens) and lower tails."""
        out = {}
        for q in self.settings.quantiles:
            out[f"+{q:g}"] = self.upper.quantile(q, self.n_tokens)
            out[f"-{q:g}"] = self.lower.quantile(q, self.n_tokens)
        return out

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"top": self.top.state_dict(), "bottom": self.bottom.state_dict(),
                "random": self.random.state_dict(), "upper": self.upper.state_dict(),
                "lower": self.lower.state_dict(), "total": self.total, "total_sq": self.total_sq,
                "active": self.active, "hist": self.hist, "n_tokens": self.n_tokens,
                "n_hist_tokens": self.n_hist_tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.top.load_state_dict(state["top"])
        self.bottom.load_state_dict(state["bottom"])
        self.random.load_state_dict(state["random"])
        self.upper.load_state_dict(state["upper"])
        self.lower.load_state_dict(state["lower"])
        self.total, self.total_sq = state["total"], state["total_sq"]
        self.active, self.hist = state["active"], state["hist"]
        self.n_tokens, self.n_hist_tokens = int(state["n_tokens"]), int(state["n_hist_tokens"])
