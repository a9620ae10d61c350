"""The scanner: runs batches of sequences through the model, stopping after the
last scanned site, and streams each site's activations into its `SiteStats`."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import Any

import torch

from neurodbg.errors import NeurodbgError
from neurodbg.model import Model
from neurodbg.scan.random_exemplars import hash_ids
from neurodbg.scan.settings import ScanSettings
from neurodbg.scan.site_stats import TAIL_SIDES, SiteStats
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
        if not site.editable:
            raise NeurodbgError(f"{site.name} cannot be scanned (attention patterns have no neurons)")
        layers[site.layer] = site.name
    return sites


class Scanner:
    def __init__(self, model: Model, settings: ScanSettings) -> None:
        self.model = model
        self.settings = settings
        self.sites = scan_sites(model, settings)
        self.stats: dict[str, SiteStats] = {}
        self.sequences = 0
        self._seq_ids: torch.Tensor | None = None
        self._hashes: torch.Tensor | None = None
        self._tails: dict[str, TailBuffer] | None = None

    def _sink(self, name: str, acts: torch.Tensor) -> None:
        assert self._seq_ids is not None
        if name not in self.stats:
            self.stats[name] = SiteStats(acts.shape[-1], self.settings, acts.device, defer_tails=True)
            self._tails = None  # the combined tail buffers are (re)built once all sites are known
        self.stats[name].update(acts, self._seq_ids.to(acts.device), self._hashes)

    @torch.no_grad()
    def process(self, batch: Seq[Any]) -> None:
        """One batch of corpus `Sequence`s (objects with `.index` and `.ids`)."""
        ids = torch.tensor([s.ids for s in batch], dtype=torch.long, device=self.model.device)
        self._seq_ids = torch.tensor([s.index for s in batch], dtype=torch.long)
        self._hashes = hash_ids(self._seq_ids)
        inputs: dict[str, Any] = {"input_ids": ids}
        if getattr(self.model.config, "use_cache", None) is not None:
            inputs["use_cache"] = False  # a scan never continues a sequence
        with self.model.trace(capture=[s.name for s in self.sites], sink=self._sink, stop_early=True) as tr:
            tr.forward(inputs)
        self._flush_tails()
        self.sequences += len(batch)

    # -- combined tail buffers -------------------------------------------------------------
    # Tail candidates of all sites go into one buffer per side, so each batch costs a
    # handful of tensor operations instead of a handful per layer (CPU op overheads
    # dominated otherwise). `sync_tails` copies the combined state back into each site.
    def _layout(self) -> list[tuple[str, int, int]]:
        out, start = [], 0
        for site in self.sites:
            if site.name in self.stats:
                width = self.stats[site.name].width
                out.append((site.name, start, width))
                start += width
        return out

    def _combined(self) -> dict[str, TailBuffer]:
        if self._tails is None:
            layout = self._layout()
            total = sum(w for _, _, w in layout)
            device = next(iter(self.stats.values())).total.device
            self._tails = {}
            for side, sign in TAIL_SIDES.items():
                buffer = TailBuffer(self.settings.tail_capacity, total, sign, device)
                parts = [self.stats[name].tails[side].sorted_keys() for name, _, _ in layout]
                buffer.load_state_dict({"keys": torch.cat(parts, dim=1)})
                self._tails[side] = buffer
        return self._tails

    def _flush_tails(self) -> None:
        combined = self._combined()
        pending = [(start, self.stats[name].pending) for name, start, _ in self._layout()]
        for side, buffer in combined.items():
            found = [buffer.candidates(*p[side], start) for start, p in pending if p is not None and side in p]
            if found:
                buffer.append(torch.cat([k for k, _ in found]), torch.cat([c for _, c in found]))
        for stats in self.stats.values():
            stats.pending = None

    def sync_tails(self) -> None:
        """Copy the combined tail buffers back into each site's statistics."""
        if self._tails is None:
            return
        for side, buffer in self._tails.items():
            ordered = buffer.sorted_keys()
            for name, start, width in self._layout():
                self.stats[name].tails[side].load_state_dict({"keys": ordered[:, start:start + width].clone()})

    def merge(self, other: Scanner) -> None:
        self.sync_tails()
        other.sync_tails()
        self._tails = None
        for name, stats in other.stats.items():
            if name in self.stats:
                self.stats[name].merge(stats)
            else:
                self.stats[name] = stats
        self.sequences += other.sequences

    def state_dict(self) -> dict[str, Any]:
        self.sync_tails()
        return {"sequences": self.sequences, "stats": {n: s.state_dict() for n, s in self.stats.items()},
                "widths": {n: s.width for n, s in self.stats.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sequences = int(state["sequences"])
        self.stats = {}
        self._tails = None
        for name, width in state["widths"].items():
            stats = SiteStats(int(width), self.settings, self.model.device, defer_tails=True)
            stats.load_state_dict(state["stats"][name])
            self.stats[name] = stats
