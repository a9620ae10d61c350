"""The training watcher's figures on a CPU through the C++ kernel (watch_kernel.cpp): one
call per site and forward call, and for the usual recorded step one call before the
optimizer's update (the norms read from the parameters' own gradients, the weights' copy on
weight steps, every site's figures and the learning rates into one record of a buffer the
run writer takes at a flush) and, on weight steps, one after it for the update's size.

Why: on a small network a training step is ~1 ms, and inside it every Python-level
operation costs several times what it costs in a tight loop (the step's working set evicts
the interpreter's: measured the same with one intra-op thread as with two). On the digits
MLP the general path's NumPy and torch calls and per-step Python objects cost ~24 % of the
step; this path ~8 % (bench/watch_overhead.py). The figures are the same, up to rounding:
sums are taken in float lanes and added in double, so they cannot overflow.

The kernel is used when this machine has it built (`neurodbg build-kernels`, which the
set-up script runs; a watcher never builds it in the middle of a training loop) and the
model is on the CPU; `NEURODBG_NO_WATCH_KERNEL=1` turns it off. Anything else runs
`site_stats` and the watcher's general path."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neurodbg.cpp_kernel import CppKernel
from neurodbg.sites.site import Site
from neurodbg.trace.tracer import _element
from neurodbg.train.site_stats import Kind

SOURCE = Path(__file__).with_name("watch_kernel.cpp")
KERNEL = CppKernel(SOURCE, "neurodbg_watch_stats", None, "the training watcher's C++ kernel")
DISABLE_ENV = "NEURODBG_NO_WATCH_KERNEL"
_CODES: dict[Kind, int] = {"other": 0, "rectifier": 1, "sigmoid": 2, "tanh": 3}

# (site, kind, (sum, sum of squares, values, fired units, saturated values), non-finite values, units),
# as the run writer takes them (run_writer.SiteFigures)
Figures = tuple[str, Kind, tuple[float, float, int, int, float | None], int, int]


def built() -> Any | None:
    """The kernel's module where this machine has it built and it is not turned off; else None."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None
    try:
        return KERNEL.built()
    except Exception:       # a build of another machine or torch that cannot load: the other code runs
        return None


class SiteBlock:
    """One step's figures of the sites it reached, as the kernel returned them (eight numbers a site:
    its index, then its figures), turned into the run writer's `SiteFigures` when asked (by the writer
    thread, off the training's)."""

    __slots__ = ("flat", "kinds", "names")

    def __init__(self, names: list[str], kinds: dict[str, Kind], flat: list[float]) -> None:
        self.names, self.kinds, self.flat = names, kinds, flat

    def figures(self) -> list[Figures]:
        return [_figures(self.names[int(self.flat[k])], self.kinds, self.flat[k + 1: k + 8])
                for k in range(0, len(self.flat), 8)]


def _figures(name: str, kinds: dict[str, Kind], f: list[float]) -> Figures:
    total, squares, count, fired, saturated, bad, units = f
    kind = kinds[name]
    return (name, kind, (total, squares, int(count), max(int(fired), 0),
                         saturated if kind in ("sigmoid", "tanh") else None), int(bad), int(units))


class RecordBlock:
    """Recorded steps as the kernel's recorder buffered them ([steps, width] float64; the layout is
    the recorder's, watch_kernel.cpp), turned into the run writer's `RawStep`s by the writer thread."""

    def __init__(self, table: torch.Tensor, params: list[str], sites: list[str], kinds: dict[str, Kind],
                 groups: int) -> None:
        self.table, self.params, self.sites, self.kinds, self.groups = table, params, sites, kinds, groups

    def raw_steps(self) -> list[Any]:         # list[run_writer.RawStep] (imported here: no cycle)
        from neurodbg.train.run_writer import RawStep

        p, g = len(self.params), self.groups
        out = []
        for r in self.table.tolist():
            grads, weights, deltas = r[2: 2 + p], r[2 + p: 2 + 2 * p], r[2 + 2 * p: 2 + 3 * p]
            lrs = r[2 + 3 * p: 2 + 3 * p + g]
            base = 2 + 3 * p + g
            reached = sorted((r[base + 8 * i], i) for i in range(len(self.sites)) if r[base + 8 * i] >= 0)
            sites: list[Any] = [_figures(self.sites[i], self.kinds, r[base + 8 * i + 1: base + 8 * i + 8])
                                for _, i in reached]
            out.append(RawStep(int(r[0]), r[1], math.hypot(*grads) if grads else None, self.params, grads,
                               [] if p == 0 or math.isnan(weights[0]) else weights,
                               [] if p == 0 or math.isnan(deltas[0]) else deltas, lrs, sites, []))
        return out


class KernelSites:
    """The watcher's sites (and, for the usual recorded step, the whole record) on the kernel's
    `Recorder`: a forward hook per site adds its output in one call; `record` closes a recorded step
    in one call (norms read from the parameters' own gradients, the sites' figures, the learning
    rates) and `take` hands the buffered records to the run writer. Steps the recorder cannot take
    (a parameter without a gradient, breakpoints, mixture-of-experts routers, tensors that are not
    float32 on the CPU) go through `end_sites` and the watcher's general path."""

    def __init__(self, kernel: Any, kinds: dict[str, Kind], params: Sequence[torch.Tensor], param_names: list[str],
                 groups: int) -> None:
        self.kernel = kernel
        self.kinds = kinds
        self.names = list(kinds)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.param_names, self.groups = param_names, groups
        self.rec = kernel.Recorder(list(params), [_CODES[kinds[n]] for n in self.names], groups)
        self.ended: SiteBlock | None = None      # this step's figures once `end_sites` read them

    def hook(self, site: Site) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        """A forward hook adding the site's output: one kernel call (the training step's only work for
        this site; everything else is looked up once, here)."""
        i, plain, site_add = self.index[site.name], site.index == 0, self.rec.site_add
        grad_enabled = torch.is_grad_enabled

        def kernel_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if grad_enabled():              # a training forward (evaluation runs under no_grad)
                x = output if plain and type(output) is torch.Tensor else _element(output, site)
                if site_add(i, x) < 0:
                    site_add(i, _host_floats(x))
        return kernel_hook

    def add(self, name: str, x: torch.Tensor) -> None:
        """One forward call's output of a site (any dtype or device: converted to float32 on the CPU)."""
        if self.rec.site_add(self.index[name], x) < 0:
            self.rec.site_add(self.index[name], _host_floats(x))

    def first_nonfinite(self) -> str | None:
        """The first site, in forward order, with a NaN or infinity in its output this step."""
        if self.ended is not None:
            return next((name for name, _, _, bad, _ in self.ended.figures() if bad), None)
        i = self.rec.first_nonfinite()
        return self.names[i] if i >= 0 else None

    def end_sites(self, now: int, window: int) -> None:
        """The general path: the step's figures of every site it reached into `ended` (forward order)."""
        self.ended = SiteBlock(self.names, self.kinds, self.rec.end_sites(now, window))

    def record(self, step: int, now: int, window: int, weights: bool, lrs: list[float]) -> bool:
        """The usual recorded step, before the update, into the recorder's buffer; False (nothing
        changed) where the recorder cannot take it."""
        try:
            return bool(self.rec.record(step, time.time(), now, window, weights, lrs))
        except TypeError:          # a learning rate that is not a number
            return False

    def discard(self) -> None:
        """Forget what the step left (what was not recorded must not leak into the next)."""
        self.rec.discard()
        self.ended = None

    def take(self) -> RecordBlock | None:
        if not self.rec.pending():
            return None
        return RecordBlock(self.rec.take(), self.param_names, self.names, self.kinds, self.groups)

    def norms(self, tensors: list[torch.Tensor]) -> list[float] | None:
        """Each tensor's L2 norm in double, or None where a tensor is not contiguous float32 on the CPU."""
        try:
            return self.kernel.norms(tensors)
        except RuntimeError:
            return None


def _host_floats(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to("cpu", torch.float32).contiguous()
