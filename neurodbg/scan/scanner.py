"""The scanner: runs batches of sequences through the model, stopping after the
last scanned site, and streams each site's activations into its `SiteStats`."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import Any, Literal

import torch

from neurodbg.errors import NeurodbgError
from neurodbg.model import Model
from neurodbg.scan.exemplars import Candidates, ExemplarSet
from neurodbg.scan.fused import fuse_after_tokens
from neurodbg.scan.settings import ScanSettings
from neurodbg.scan.site_stats import TAIL_SIDES, SiteStats
from neurodbg.scan.stream_batch import StreamBatch
from neurodbg.scan.tails import TailBuffer
from neurodbg.sites.site import Site


def scan_sites(model: Model, settings: ScanSettings) -> list[Site]:
    sites = model.resolve(list(settings.sites))
    layers: dict[int, str] = {}
    for site in sites:
        if site.layer is None:
            raise NeurodbgError(f"scan sites must be per-layer canonical sites; {site.name} is not")
        if site.layer in layers:
            raise NeurodbgError(f"scan one site per layer: {layers[site.layer]} and {site.name} share layer "
                                f"{site.layer}")
        if not site.scannable:
            raise NeurodbgError(f"{site.name} cannot be scanned (attention patterns and a router's choices have "
                                f"no neurons)")
        layers[site.layer] = site.name
    return sites


def wide_by_default(device: torch.device) -> bool:
    """Whether to gather all layers' activations and update their statistics at once
    (`Scanner(wide=...)`). Per layer, the statistics are ~75 small tensor operations; on a
    GPU each is a kernel launch (and some a host sync), on a many-core CPU each costs more
    in overhead than in work, so one pass over all layers is several times faster there.
    On a CPU with few cores the operations are bound by memory bandwidth instead, and
    per layer, while its activations are still in cache, is as fast and needs no buffer."""
    return device.type != "cpu" or torch.get_num_threads() >= 8


CHANNEL_MAJOR_POSITIONS = 128     # layer_kernel.cpp's CHANNEL_ROWS


def as_positions(acts: torch.Tensor) -> torch.Tensor:
    """A site's output as [batch, positions, neurons] for the token paths (on a CPU an image
    site's output goes to the image kernel as it lies, see `_sink`): tokens as they are, a
    convolution's [B, C, H, W] with its channels as neurons and its row-major pixels as positions, a
    vector [B, N] as one position. A convolution's map of `CHANNEL_MAJOR_POSITIONS` or more is a
    view, channel-major in memory, which the C++ layer kernel reads as it lies (a copy into rows
    was ~4% of a ResNet scan's time); a smaller map is copied into rows (a permuted copy, ~1.8x
    faster here than a flattened, transposed one), which its short rows make the faster read."""
    if acts.dim() == 4:
        if acts.shape[2] * acts.shape[3] >= CHANNEL_MAJOR_POSITIONS:
            return acts.flatten(2).transpose(1, 2)
        return acts.permute(0, 2, 3, 1).contiguous().view(acts.shape[0], -1, acts.shape[1])
    if acts.dim() == 2:
        return acts.unsqueeze(1)
    return acts


def _passing_by_runs(buffer: TailBuffer, found: list[tuple[int, tuple[torch.Tensor, torch.Tensor]]]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens of the sites' hot blocks (each site's first column, (values [P, size], columns))
    that pass `buffer`'s thresholds, in column order: picked for a run of sites with one block size
    at once (sites of one map size may still differ in it: it follows their widths)."""
    runs: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
    for start, (values, cols) in found:
        if not runs or runs[-1][0][-1].shape[1] != values.shape[1]:
            runs.append(([], []))
        runs[-1][0].append(values)
        runs[-1][1].append(cols + start)
    picked = [buffer.passing(torch.cat(values), torch.cat(cols)) for values, cols in runs]
    if len(picked) == 1:
        return picked[0]
    return torch.cat([keys for keys, _ in picked]), torch.cat([cols for _, cols in picked])


class Scanner:
    def __init__(self, model: Model, settings: ScanSettings, *, wide: bool | None = None,
                 fuse_after: int | Literal["auto"] | None = "auto", sites: list[Site] | None = None) -> None:
        self.model = model
        self.settings = settings
        self.sites = scan_sites(model, settings) if sites is None else sites
        self.stats: dict[str, SiteStats] = {}
        self.sequences = 0
        self.wide = wide_by_default(model.device) if wide is None else wide
        # see `SiteStats.fuse_after` and scan/fused.py ("auto": by the model's device type)
        self.fuse_after = fuse_after_tokens(model.device) if fuse_after == "auto" else fuse_after
        self._wide_stats: SiteStats | None = None
        self._wide_acts: torch.Tensor | None = None
        self._wide_start: dict[str, int] = {}
        self._batch: StreamBatch | None = None
        self._seq_ids: torch.Tensor | None = None
        self._hashes: torch.Tensor | None = None
        self._combined: dict[int, tuple[dict[str, ExemplarSet], dict[str, TailBuffer]]] | None = None
        self._scratch: dict[str, torch.Tensor] = {}   # work tensors the sites share

    def _sink(self, name: str, acts: torch.Tensor) -> None:
        assert self._seq_ids is not None and self._batch is not None
        if acts.dim() != 3 and self._wide_stats is None:
            # an image site: its maps as they lie, into all its statistics in one kernel call
            stats = self.stats.get(name)
            if stats is None:
                length = acts[0, 0].numel() if acts.dim() == 4 else 1
                stats = self._new_stats(name, acts.shape[1], length, acts.device)
            if stats.update_maps(acts, self._batch):
                return
        acts = as_positions(acts)
        if self._wide_stats is not None:
            # all sites are known: collect this layer beside the others, update them all at once
            start = self._wide_start[name]
            self._wide_buffer(acts)[:, :, start:start + acts.shape[-1]].copy_(acts)
            return
        stats = self.stats.get(name) or self._new_stats(name, acts.shape[-1], acts.shape[1], acts.device)
        stats.update(acts, self._seq_ids.to(acts.device), self._hashes)

    def _new_stats(self, name: str, width: int, length: int, device: torch.device) -> SiteStats:
        stats = self.stats[name] = SiteStats(width, self.settings, device, deferred=True, scratch=self._scratch,
                                             fuse_after=self.fuse_after, length=length)
        self._combined = None  # the combined sets are (re)built once all sites are known
        return stats

    @torch.no_grad()
    def process(self, batch: Seq[Any]) -> None:
        """One batch of corpus `Sequence`s (objects with `.index` and `.ids`)."""
        ids = torch.tensor([s.ids for s in batch], dtype=torch.long, device=self.model.device)
        inputs: dict[str, Any] = {"input_ids": ids}
        if getattr(self.model.config, "use_cache", None) is not None:
            inputs["use_cache"] = False  # a scan never continues a sequence
        self.forward(inputs, [s.index for s in batch])

    @torch.no_grad()
    def forward(self, inputs: Any, indices: list[int]) -> None:
        """One batch of model inputs (token ids, or a preprocessed image batch), the n-th of
        which is item `indices[n]` of the stream (its sequence or image index)."""
        self._batch = StreamBatch.of(indices, self.settings.sample_every, self.settings.hist_every)
        self._seq_ids, self._hashes = self._batch.ids, self._batch.hashes
        with self.model.trace(capture=[s.name for s in self.sites], sink=self._sink, stop_early=True) as tr:
            tr.forward(inputs)
        if self._wide_stats is not None:
            self._wide_stats.update(self._wide_buffer(), self._seq_ids.to(self.model.device), self._hashes)
            self._wide_stats.sync_counters(list(self.stats.values()))
        else:
            self._flush()
            if self.wide and len(self.stats) == len(self.sites):
                self._go_wide()
        self.sequences += len(indices)

    # -- wide mode ----------------------------------------------------------------------------
    def _go_wide(self) -> None:
        layout = self._layout()
        self._wide_start = {name: start for name, start, _ in layout}
        self._wide_stats = SiteStats.joined([self.stats[name] for name, _, _ in layout])
        self._combined = None

    def _wide_buffer(self, like: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, all columns]: this batch's activations of every site side by side."""
        if like is not None:
            batch, length = like.shape[:2]
            if self._wide_acts is None or self._wide_acts.shape[:2] != (batch, length):
                width = sum(w for _, _, w in self._layout())
                self._wide_acts = torch.empty((batch, length, width), dtype=torch.float32, device=like.device)
        assert self._wide_acts is not None
        return self._wide_acts

    # -- combined sets -----------------------------------------------------------------------
    # The candidates of all sites go into one exemplar set and one tail buffer per side, so
    # each batch costs a handful of tensor operations instead of a handful per layer (CPU op
    # overheads dominated otherwise; on a GPU each is a kernel launch). Each site's sets
    # are rebound to views of the combined ones, so they always hold the current state.
    # Sites are combined with those of the same positions per item (all of them for text;
    # an image's feature maps shrink from stage to stage).
    def _layout(self) -> list[tuple[str, int, int]]:
        out, start = [], 0
        for site in self.sites:
            if site.name in self.stats:
                width = self.stats[site.name].width
                out.append((site.name, start, width))
                start += width
        return out

    def _groups(self) -> dict[int, list[tuple[str, int, int]]]:
        """Sites by positions per item, each with its first column within its group."""
        groups: dict[int, list[tuple[str, int, int]]] = {}
        for site in self.sites:
            if site.name in self.stats:
                stats = self.stats[site.name]
                group = groups.setdefault(stats.length, [])
                start = group[-1][1] + group[-1][2] if group else 0
                group.append((site.name, start, stats.width))
        return groups

    def _joined(self) -> dict[int, tuple[dict[str, ExemplarSet], dict[str, TailBuffer]]]:
        if self._combined is None:
            self._combined = {}
            for length, layout in self._groups().items():
                sites = [self.stats[name] for name, _, _ in layout]
                self._combined[length] = (
                    {"top": ExemplarSet.joined([s.top for s in sites]),
                     "bottom": ExemplarSet.joined([s.bottom for s in sites])},
                    {side: TailBuffer.joined([s.tails[side] for s in sites]) for side in TAIL_SIDES})
        return self._combined

    def _flush(self) -> None:
        assert self._seq_ids is not None
        combined = None
        for length, layout in self._groups().items():
            pending = []
            for name, start, _ in layout:
                stats = self.stats[name]
                if stats.pending is not None:
                    pending.append((start, stats.pending))
                    stats.pending = None
            if not pending:
                continue
            combined = combined or self._joined()
            exemplars, tails = combined[length]
            for side, joined in exemplars.items():
                joined.absorb(Candidates.side_by_side([(start, p.exemplars[side]) for start, p in pending]),
                              self._seq_ids)
            for side, buffer in tails.items():
                found = [(start, f) for start, p in pending if (f := p.tails.get(side)) is not None]
                if found:
                    buffer.append(*_passing_by_runs(buffer, found))

    def merge(self, other: Scanner) -> None:
        self._combined = None
        self._wide_stats = None
        for name, stats in other.stats.items():
            if name in self.stats:
                self.stats[name].merge(stats)
            else:
                self.stats[name] = stats
        self.sequences += other.sequences

    def state_dict(self) -> dict[str, Any]:
        return {"sequences": self.sequences, "stats": {n: s.state_dict() for n, s in self.stats.items()},
                "widths": {n: s.width for n, s in self.stats.items()},
                "lengths": {n: s.length for n, s in self.stats.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sequences = int(state["sequences"])
        self.stats = {}
        self._combined = None
        self._wide_stats = None
        lengths = state.get("lengths", {})
        for name, width in state["widths"].items():
            stats = SiteStats(int(width), self.settings, self.model.device, deferred=True, scratch=self._scratch,
                              fuse_after=self.fuse_after, length=lengths.get(name))
            stats.load_state_dict(state["stats"][name])
            self.stats[name] = stats
