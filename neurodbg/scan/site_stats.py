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

# tail buffers: name -> sign; the "_sample" ones see only the histogram's sequence sample
TAIL_SIDES: dict[str, int] = {"upper": +1, "lower": -1, "upper_sample": +1, "lower_sample": -1}


class SiteStats:
    def __init__(self, width: int, settings: ScanSettings, device: torch.device | str = "cpu",
                 defer_tails: bool = False) -> None:
        s = settings
        # With defer_tails the owner (the Scanner) feeds all sites' tail candidates into
        # one combined buffer per batch and copies the result back here (`pending`).
        self.defer_tails = defer_tails
        self.pending: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.width, self.settings = width, s
        length = s.seq_len
        self.top = ExemplarSet(s.top_k, width, length, +1, device)
        self.bottom = ExemplarSet(s.top_k, width, length, -1, device)
        self.random = RandomExemplars(s.random_k, width, length, device)
        self.tails = {side: TailBuffer(s.tail_capacity, width, sign, device) for side, sign in TAIL_SIDES.items()}
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
        every = self.settings.hist_every
        sample = (seq_ids % every == 0).nonzero().flatten().to(counted.device)
        feeds = {"upper": (counted, hi), "lower": (counted, lo)}
        if sample.numel():
            sampled = counted[sample]
            feeds.update(upper_sample=(sampled, hi[sample]), lower_sample=(sampled, lo[sample]))
            self._histogram(sampled.reshape(-1, self.width))
        if self.defer_tails:
            self.pending = feeds
        else:
            for side, (tokens, extremes) in feeds.items():
                self.tails[side].update(tokens, extremes)
        flat = counted.reshape(-1, self.width)
        # per-batch sums in float32 over a few hundred tokens (as matrix products, the
        # fastest reductions on CPU here), accumulated in float64
        ones = torch.ones(1, flat.shape[0], dtype=flat.dtype, device=flat.device)
        self.total += (ones @ flat)[0].double()
        self.total_sq += (ones @ (flat * flat))[0].double()
        self.active += (ones @ torch.relu(flat).sign_())[0].round().long()
        self.n_tokens += flat.shape[0]

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
        for side, buffer in self.tails.items():
            buffer.merge(other.tails[side])
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

    @property
    def upper(self) -> TailBuffer:
        return self.tails["upper"]

    @property
    def lower(self) -> TailBuffer:
        return self.tails["lower"]

    def quantile_source(self, q: float) -> str | None:
        """'exact' (from all tokens), 'sampled' (from the sequence sample: an estimate, see
        `sampled_quantile_error`) or None (the rank lies beyond both buffers)."""
        if self.upper.holds_rank(q, self.n_tokens):
            return "exact"
        if self.tails["upper_sample"].holds_rank(q, self.n_hist_tokens):
            return "sampled"
        return None

    def quantiles(self) -> dict[str, torch.Tensor]:
        """Upper ('+1e-05': value exceeded by that fraction of tokens) and lower tails."""
        out = {}
        for q in self.settings.quantiles:
            source = self.quantile_source(q)
            for key, side in ((f"+{q:g}", "upper"), (f"-{q:g}", "lower")):
                if source == "sampled":
                    out[key] = self.tails[f"{side}_sample"].quantile(q, self.n_hist_tokens)
                else:
                    out[key] = self.tails[side].quantile(q, self.n_tokens)
        return out

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"top": self.top.state_dict(), "bottom": self.bottom.state_dict(),
                "random": self.random.state_dict(),
                **{side: buffer.state_dict() for side, buffer in self.tails.items()},
                "total": self.total, "total_sq": self.total_sq,
                "active": self.active, "hist": self.hist, "n_tokens": self.n_tokens,
                "n_hist_tokens": self.n_hist_tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.top.load_state_dict(state["top"])
        self.bottom.load_state_dict(state["bottom"])
        self.random.load_state_dict(state["random"])
        for side, buffer in self.tails.items():
            buffer.load_state_dict(state[side])
        self.total, self.total_sq = state["total"], state["total_sq"]
        self.active, self.hist = state["active"], state["hist"]
        self.n_tokens, self.n_hist_tokens = int(state["n_tokens"]), int(state["n_hist_tokens"])
