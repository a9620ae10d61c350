"""All streaming statistics of one site (one layer's neurons), updated batch by
batch on the model's device. Memory is fixed by the settings, not the corpus."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from neurodbg.scan import image_kernel, layer_kernel
from neurodbg.scan.exemplars import Candidates, ExemplarSet
from neurodbg.scan.fused import fused_reductions
from neurodbg.scan.random_exemplars import RandomExemplars
from neurodbg.scan.settings import ScanSettings
from neurodbg.scan.stream_batch import StreamBatch
from neurodbg.scan.tails import TailBuffer

# tail buffers: name -> sign; the "_sample" ones see only the histogram's sequence sample
TAIL_SIDES: dict[str, int] = {"upper": +1, "lower": -1, "upper_sample": +1, "lower_sample": -1}


BLOCK_VALUES = 2048    # a narrow layer's blocks hold about this many values (block positions x width)


def block_size(length: int, width: int = BLOCK_VALUES) -> int:
    """Tokens per block for block extremes: a divisor of `length` near 8 (the whole
    sequence when there is none). A narrow layer (an image's first convolutions: 64
    channels over 3,136 positions) takes longer blocks, near BLOCK_VALUES / width
    positions, so that the per-block work of the C++ kernel stays as wide as a text
    layer's (its fixed cost per block otherwise dominates)."""
    target = BLOCK_VALUES // max(width, 1)
    if target <= 8:
        return next((d for d in (8, 9, 7, 10, 6, 12, 5, 16, 4) if length % d == 0), length)
    divisors = [d for d in range(1, min(length, 4 * target) + 1) if length % d == 0]
    return min(divisors, key=lambda d: (abs(math.log(d / target)), d))


def _asinh(y: torch.Tensor) -> torch.Tensor:
    """asinh from vectorised primitives (torch's CPU asinh is scalar, ~3x slower):
    log1p(a + a^2 / (1 + sqrt(1 + a^2))) with the sign of y, accurate near 0. Beyond
    |y| = 1e8 (far past any histogram range) values are clamped."""
    y = y.clamp(-1e8, 1e8)
    a = y.abs()
    square = a * a
    return square.div(square.add(1).sqrt_().add_(1)).add_(a).log1p_().copysign_(y)


def bins_by_search(flat: torch.Tensor) -> bool:
    """Whether `SiteStats._histogram` bins by binary search against the published edges
    (GPU) or by the asinh formula, then the edges either side (CPU: vectorised, faster there
    than the search); the bins are the same."""
    return flat.is_cuda


@dataclass
class Pending:
    """A deferred site's candidates from one batch, waiting for its owner to merge the
    candidates of all sites at once. A tail side is missing or None when the batch went into
    the buffer directly (early in a scan, see `TailBuffer.hot_blocks`, or by the C++ layer kernel)."""

    exemplars: dict[str, Candidates]                                    # "top" / "bottom"
    tails: dict[str, tuple[torch.Tensor, torch.Tensor] | None]          # side -> hot blocks (values, columns)


class SiteStats:
    def __init__(self, width: int, settings: ScanSettings, device: torch.device | str = "cpu",
                 deferred: bool = False, scratch: dict[str, torch.Tensor] | None = None,
                 fuse_after: int | None = None, length: int | None = None) -> None:
        s = settings
        # take the C++ layer kernel (CPU) or the compiled reductions (`fused`) once the stream
        # is this many tokens in (None: never); see `_settled`
        self.fuse_after = fuse_after
        # reusable work tensors, shared by the sites of one scanner (one layer at a time)
        self.scratch: dict[str, torch.Tensor] = {} if scratch is None else scratch
        # deferred: the owner (the Scanner) merges the exemplar and tail candidates of all
        # sites (`pending`) at once after each batch, its combined sets viewing each site's
        self.deferred = deferred
        self.pending: Pending | None = None
        self.width, self.settings = width, s
        # positions per item: a sequence's tokens, or an image site's feature-map pixels
        length = self.length = s.seq_len if length is None else int(length)
        self.top = ExemplarSet(s.top_k, width, length, +1, device)
        self.bottom = ExemplarSet(s.top_k, width, length, -1, device)
        self.random = RandomExemplars(s.random_k, width, length, device)
        self.tails = {side: TailBuffer(s.tail_capacity, width, sign, device) for side, sign in TAIL_SIDES.items()}
        self.total = torch.zeros(width, dtype=torch.float64, device=device)
        self.total_sq = torch.zeros(width, dtype=torch.float64, device=device)
        self.active = torch.zeros(width, dtype=torch.long, device=device)
        self.hist = torch.zeros((width, s.hist_bins), dtype=torch.long, device=device)
        self.n_tokens = 0
        self.n_hist_tokens = 0      # tokens in the histogram's sample
        self.n_sample_tokens = 0    # tokens in the sampled tails' sample
        self._hist_top = math.asinh(s.hist_limit / s.hist_scale)
        self._hist_offsets = torch.arange(width, device=device) * s.hist_bins
        self._edges: torch.Tensor | None = None
        self._rows: dict[tuple[Any, ...], torch.Tensor] = {}
        self._ones = torch.ones(0, dtype=torch.long, device=device)
        self._image_site: Any = None            # the image kernel's handle on the state below
        self._image_state: list[torch.Tensor] = []

    def update(self, acts: torch.Tensor, seq_ids: torch.Tensor, hashes: torch.Tensor | None = None) -> None:
        """acts [B, L, width] (any float dtype) for sequences `seq_ids` [B]; `hashes`
        (of the ids, for the random sample) when the caller already has them."""
        acts = acts.detach().float()
        counted = acts[:, 1:] if self.settings.skip_first else acts
        batch, length = counted.shape[:2]
        # extremes per block of a few tokens, then per sequence: the tail buffers look
        # token by token only at blocks that beat a threshold, not at whole sequences
        size = block_size(length, self.width)
        blocks = counted.view(batch, length // size, size, self.width)
        indices = seq_ids.tolist()
        sample = self._every(indices, self.settings.sample_every, counted.device)
        if sample is not None:
            self.n_sample_tokens += sample.numel() * length
        settled = self._settled(indices, length)
        if not (settled and self._from_kernel(acts, size, seq_ids, sample)):
            self._eager(acts, blocks, size, seq_ids, sample, settled)
        self.random.update(seq_ids, acts, hashes)
        shown = self._every(indices, self.settings.hist_every, counted.device)
        if shown is not None:
            self._histogram(blocks[shown].reshape(-1, self.width))
        self.n_tokens += batch * length

    def update_maps(self, acts: torch.Tensor, batch: StreamBatch) -> bool:
        """An image site's output as it lies (feature maps [B, C, H, W] or vectors [B, N]) into
        every statistic by one call of the image kernel; False (nothing done) where it cannot
        take them (then `update` takes them as positions)."""
        s = self.settings
        if (self.fuse_after is None or s.skip_first or (self.deferred and self.pending is not None)
                or not image_kernel.fits(s) or not image_kernel.maps_of(acts)):
            return False      # (fuse_after None: the eager code throughout)
        module = image_kernel.module(self._settled([batch.first], self.length))
        if module is None:
            return False
        state = self._kernel_state()
        if self._image_site is None or any(a is not b for a, b in zip(state, self._image_state, strict=True)):
            # (a new handle when a state tensor was replaced: a merge, a load, a joined set)
            self._image_site = module.ImageSite(state, self.width, self.length, self._inner_edges(acts.device))
            self._image_state = state
        self._image_site.update(acts, batch.ids, batch.hashes, batch.flags)
        self.top.last_id = max(self.top.last_id, batch.last)
        self.bottom.last_id = max(self.bottom.last_id, batch.last)
        self.n_tokens += acts.shape[0] * self.length
        self.n_sample_tokens += batch.sampled * self.length
        self.n_hist_tokens += batch.shown * self.length
        return True

    def _kernel_state(self) -> list[torch.Tensor]:
        """The tensors the image kernel updates, in its order."""
        sets = [t for e in (self.top, self.bottom) for t in (e._keys, e._ids, e._slots, e.store)]
        tails = [t for side in TAIL_SIDES for t in (self.tails[side].keys, self.tails[side].fill,
                                                    self.tails[side].bound)]
        r = self.random
        return [*sets, *tails, self.total, self.total_sq, self.active, self.hist, r.hashes, r.ids, r.slots, r.store]

    def _eager(self, acts: torch.Tensor, blocks: torch.Tensor, size: int, seq_ids: torch.Tensor,
               sample: torch.Tensor | None, settled: bool) -> None:
        """The extremes, exemplar and tail candidates and sums from tensor operations (the
        block extremes and sums compiled once the scan has settled, see `fused`)."""
        # (only full batches: a partial one would compile anew)
        full = acts.shape[0] == self.settings.batch_size
        fused = fused_reductions(acts, size, self.settings.skip_first) if settled and full else None
        if fused is None:
            # (amax and amin separately are ~10x faster than aminmax on CPU here)
            block_hi, block_lo = blocks.amax(2), blocks.amin(2)      # [B, blocks, width]
            hi, lo = block_hi.amax(1), block_lo.amin(1)               # per-sequence extremes [B, width]
        else:
            block_hi, block_lo, hi, lo = fused[:4]
        if self.deferred:
            exemplars = {"top": self.top.candidates(hi, acts, seq_ids),
                         "bottom": self.bottom.candidates(lo, acts, seq_ids)}
        else:
            self.top.update(hi, seq_ids, acts)
            self.bottom.update(lo, seq_ids, acts)
        feeds = {"upper": (blocks, block_hi), "lower": (blocks, block_lo)}
        if sample is not None:
            sampled = blocks[sample]
            feeds.update(upper_sample=(sampled, block_hi[sample]), lower_sample=(sampled, block_lo[sample]))
        if self.deferred:
            # hot blocks are gathered now, while this layer's activations are still in cache
            tails = {side: self.tails[side].hot_blocks(*feed) for side, feed in feeds.items()}
            self.pending = Pending(exemplars, tails)
        else:
            for side, (tokens, extremes) in feeds.items():
                self.tails[side].update(tokens, extremes)
        if fused is None:
            self._sums(acts)
        else:
            self._accumulate(*fused[4:])

    def _from_kernel(self, acts: torch.Tensor, size: int, seq_ids: torch.Tensor, sample: torch.Tensor | None) -> bool:
        """The same statistics from one pass of the C++ layer kernel (a CPU), which updates
        the totals and tail buffers itself; False when it is unavailable."""
        rows = len(seq_ids)
        sampled = [0] * rows
        for row in ([] if sample is None else sample.tolist()):
            sampled[row] = 1
        # [side, row]: whether the side reads the row (the sampled sides only the sample's rows)
        reads = [flag for side in TAIL_SIDES for flag in (sampled if side.endswith("_sample") else [1] * rows)]
        found = layer_kernel.layer_stats(acts, size, self.settings.skip_first,
                                         [self.top.entry_keys(seq_ids), self.bottom.entry_keys(seq_ids)],
                                         list(self.tails.values()), reads, [self.total, self.total_sq, self.active])
        if found is None:
            return False
        top, bottom = Candidates(*found[0]), Candidates(*found[1])
        if self.deferred:
            self.pending = Pending({"top": top, "bottom": bottom}, {})
        else:
            self.top.absorb(top, seq_ids)
            self.bottom.absorb(bottom, seq_ids)
        return True

    @staticmethod
    def _every(indices: list[int], every: int, device: torch.device) -> torch.Tensor | None:
        """The rows of the sequences in the every-n-th subsample (None: none is; most batches
        of a few sequences, which then cost no tensor operations)."""
        rows = [row for row, index in enumerate(indices) if index % every == 0]
        return torch.tensor(rows, device=device) if rows else None

    def _settled(self, indices: list[int], length: int) -> bool:
        """Whether this batch takes the C++ or compiled path: once the stream is `fuse_after`
        tokens in, counted by the batch's first sequence index, so that a resumed scan and
        every shard of a distributed one take the same path for the same batch as an
        uninterrupted scan (the paths' float sums differ in rounding)."""
        return self.fuse_after is not None and min(indices, default=0) * length >= self.fuse_after

    def _accumulate(self, total: torch.Tensor, total_sq: torch.Tensor, active: torch.Tensor) -> None:
        """Add one batch's sums (and positive count) to the float64 totals."""
        self.total.add_(total)          # (in float64: in-place adds promote, no converted copy)
        self.total_sq.add_(total_sq)
        self.active += active.round().long() if active.is_floating_point() else active

    def _sums(self, acts: torch.Tensor) -> None:
        """Per-batch sums in float32, accumulated in float64. They are matrix products with
        a 0/1 row that leaves out the skipped positions (the fastest reductions on CPU
        here, and no copy of the activations); squares and the positive indicator are
        written into a reused scratch tensor (fresh temporaries per layer measured about
        twice as slow to write)."""
        flat = acts.reshape(-1, self.width)
        counts = self._counted_row(acts.shape[0], acts.shape[1], flat)
        key = f"derived{tuple(flat.shape)}"        # one per shape: an image's sites differ in size
        derived = self.scratch.get(key)
        if derived is None or derived.dtype != flat.dtype:
            derived = self.scratch[key] = flat.new_empty((2, *flat.shape))
        torch.mul(flat, flat, out=derived[0])
        torch.gt(flat, 0, out=derived[1])
        square, positive = (counts @ derived)[:, 0]
        self._accumulate((counts @ flat)[0], square, positive)

    def _counted_row(self, batch: int, length: int, like: torch.Tensor) -> torch.Tensor:
        """[1, batch * length]: 1 for counted positions, 0 for skipped ones."""
        key = (batch, length, like.dtype, like.device)
        if key not in self._rows:
            row = torch.ones(batch, length, dtype=like.dtype, device=like.device)
            if self.settings.skip_first:
                row[:, 0] = 0
            self._rows = {key: row.view(1, -1)}
        return self._rows[key]

    def _histogram(self, flat: torch.Tensor) -> None:
        """Count the sampled tokens' values, flat [tokens, width], into their bins."""
        s = self.settings
        if bins_by_search(flat):
            # one binary search per value against the published edges (the asinh formula below
            # is ~16 passes over the sample, a tenth of the statistics' time at batch 1024)
            idx = torch.bucketize(flat, self._inner_edges(flat.device), right=True).add_(self._hist_offsets)
            if self._ones.numel() != idx.numel():
                self._ones = torch.ones(idx.numel(), dtype=self.hist.dtype, device=idx.device)
            self.hist.view(-1).scatter_add_(0, idx.view(-1), self._ones)   # (faster than bincount + add)
        else:
            # neuron-major [width, tokens], so the counts go row by row: each neuron's counters
            # stay in cache while its tokens are added, and rows are counted in parallel (one
            # scatter into the flat table missed cache on nearly every value and ran on one
            # thread: 48 ms for all layers at once on 2 cores, now ~10)
            values = flat.T
            scaled = torch.div(values, s.hist_scale, out=flat.new_empty((self.width, flat.shape[0])))
            step = 2 * self._hist_top / s.hist_bins
            position = _asinh(scaled).add_(self._hist_top).div_(step).floor_().clamp_(0, s.hist_bins - 1)
            # NaN goes to the last bin, as the search puts it (cast as is, it indexes out of range)
            bins = position.nan_to_num_(nan=s.hist_bins - 1).long()
            # the formula's rounding may put a value within a rounding of an edge one bin off: the
            # edges on either side settle it, so the bins are the search's (and the image kernel's)
            edges = self._bin_edges(flat.device)
            bins += values >= edges[bins + 1]
            bins -= (values < edges[bins]).long()
            self.hist.scatter_add_(1, bins, torch.ones((1, 1), dtype=self.hist.dtype).expand_as(bins))
        self.n_hist_tokens += flat.shape[0]

    def _bin_edges(self, device: torch.device) -> torch.Tensor:
        """[bins + 1]: bin i holds edges[i] <= x < edges[i + 1] (the inner edges, within -inf and inf)."""
        inner = self._inner_edges(device)
        infinity = torch.tensor([float("inf")], device=device)
        return torch.cat([-infinity, inner, infinity])

    def _inner_edges(self, device: torch.device) -> torch.Tensor:
        """The histogram's inner bin edges in float32, each rounded up, so that for a float32
        x, x >= edge32 exactly when x >= the float64 edge (outer bins stay open-ended)."""
        if self._edges is None or self._edges.device != device:
            exact = torch.tensor(self.settings.hist_edges()[1:-1], dtype=torch.float64)
            edges = exact.float()
            edges = torch.where(edges.double() < exact, torch.nextafter(edges, torch.tensor(float("inf"))), edges)
            self._edges = edges.to(device)
        return self._edges

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
        self.n_sample_tokens += other.n_sample_tokens

    @classmethod
    def joined(cls, parts: list[SiteStats]) -> SiteStats:
        """Statistics over the columns of all `parts` side by side, so one `update` with the
        activations of all their layers side by side updates every part: each part's state
        is rebound to views of the joined state. Its token counters are the caller's to copy
        back (`sync_counters`)."""
        first = parts[0]
        device = first.total.device
        joined = cls(sum(p.width for p in parts), first.settings, device, scratch=first.scratch,
                     fuse_after=first.fuse_after, length=first.length)
        joined.top = ExemplarSet.joined([p.top for p in parts])
        joined.bottom = ExemplarSet.joined([p.bottom for p in parts])
        joined.random = RandomExemplars.joined([p.random for p in parts])
        joined.tails = {side: TailBuffer.joined([p.tails[side] for p in parts]) for side in TAIL_SIDES}
        for name in ("total", "total_sq", "active", "hist"):
            whole = torch.cat([getattr(p, name) for p in parts])
            setattr(joined, name, whole)
            start = 0
            for p in parts:
                setattr(p, name, whole[start:start + p.width])
                start += p.width
        joined.n_tokens, joined.n_hist_tokens = first.n_tokens, first.n_hist_tokens
        joined.n_sample_tokens = first.n_sample_tokens
        return joined

    def sync_counters(self, parts: list[SiteStats]) -> None:
        for p in parts:
            p.n_tokens, p.n_hist_tokens, p.n_sample_tokens = self.n_tokens, self.n_hist_tokens, self.n_sample_tokens
            p.top.last_id, p.bottom.last_id = self.top.last_id, self.bottom.last_id

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
        """'exact' (from all tokens), 'sampled' (from the every-`sample_every`-th-sequence
        sample: an estimate whose share of all tokens beyond it is q within a few binomial
        standard deviations of the sample size, see the README) or None (the rank lies
        beyond both buffers)."""
        if self.upper.holds_rank(q, self.n_tokens):
            return "exact"
        if self.tails["upper_sample"].holds_rank(q, self.n_sample_tokens):
            return "sampled"
        return None

    def quantiles(self) -> dict[str, torch.Tensor]:
        """Upper ('+1e-05': value exceeded by that fraction of tokens) and lower tails."""
        out = {}
        for q in self.settings.quantiles:
            source = self.quantile_source(q)
            for key, side in ((f"+{q:g}", "upper"), (f"-{q:g}", "lower")):
                if source == "sampled":
                    out[key] = self.tails[f"{side}_sample"].quantile(q, self.n_sample_tokens)
                else:
                    out[key] = self.tails[side].quantile(q, self.n_tokens)
        return out

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"top": self.top.state_dict(), "bottom": self.bottom.state_dict(),
                "random": self.random.state_dict(),
                **{side: buffer.state_dict() for side, buffer in self.tails.items()},
                # (copies: these may be views of a joined state, and a saved view saves all of it)
                "total": self.total.clone(), "total_sq": self.total_sq.clone(),
                "active": self.active.clone(), "hist": self.hist.clone(), "n_tokens": self.n_tokens,
                "n_hist_tokens": self.n_hist_tokens, "n_sample_tokens": self.n_sample_tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.top.load_state_dict(state["top"])
        self.bottom.load_state_dict(state["bottom"])
        self.random.load_state_dict(state["random"])
        for side, buffer in self.tails.items():
            buffer.load_state_dict(state[side])
        self.total, self.total_sq = state["total"], state["total_sq"]
        self.active, self.hist = state["active"], state["hist"]
        self.n_tokens, self.n_hist_tokens = int(state["n_tokens"]), int(state["n_hist_tokens"])
        self.n_sample_tokens = int(state["n_sample_tokens"])
