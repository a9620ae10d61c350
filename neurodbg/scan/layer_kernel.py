"""One C++ pass over a layer's activations for all its per-batch scan statistics on a
CPU (layer_kernel.cpp): the sums, the sequences' extremes and the exemplar candidates
they make, and the tail buffers' updates.

Eager, these are ~60 small tensor operations per layer, and the compiled reductions
(scan/fused.py) fuse only the first of them: each later one reads the activations, or
masks built from them, again, and the sparse steps (`nonzero`, gathers) cost ~100 us
each on the 2-core test machine even when almost nothing is found. Here each value is
read once, while its cache line is in hand, and a token that beats a tail threshold goes
straight into its buffer (a full row is compacted at once, which raises the threshold for
the rest of the batch). The exemplar candidates are the eager code's, in the same order;
the tail buffers keep the same values (in another internal order, which nothing reads); only
the float sums are added in another order (per block in float, the blocks in double), so
they differ from the eager ones in rounding.

It is built with torch's C++ extension loader (a C++ compiler and ninja; ~40 s once per
machine and torch version, kept under $NEURODBG_HOME/kernels; see cpp_kernel.py) when a scan first reaches
`fused.FUSE_AFTER_TOKENS` tokens; if the build fails the scan goes on with the compiled
reductions or the eager code."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from neurodbg.cpp_kernel import CppKernel
from neurodbg.scan.fused import DISABLE_ENV
from neurodbg.scan.tails import TailBuffer

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("layer_kernel.cpp")
KERNEL = CppKernel(SOURCE, "neurodbg_layer_stats", ["layer_stats"], "the scan's C++ layer kernel")
_module: Any = None
_broken = False


def available(acts: torch.Tensor) -> bool:
    return (acts.device.type == "cpu" and acts.dtype == torch.float32 and not _broken
            and os.environ.get(DISABLE_ENV, "") in ("", "0"))


def load() -> Any:
    """The kernel's module: imported from its kept build, else built (raises if it cannot be)."""
    global _module
    if _module is None:
        _module = KERNEL.load()
    return _module


def layer_stats(acts: torch.Tensor, size: int, skip_first: bool, lowest_keys: list[torch.Tensor],
                tails: list[TailBuffer], reads: list[int], totals: list[torch.Tensor]
                ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] | None:
    """acts [B, L, W] float32; lowest_keys: the top and bottom exemplar sets' [W]; the tail
    buffers are updated in place, each from the sequences it reads (reads [S * B]: 1 where
    side s reads sequence b); totals (sum, sum of squares, count of x > 0, each [W]) are
    added to in place. Returns the top and bottom exemplar candidates (cols, rows, keys,
    acts), or None when the kernel cannot be built (the caller then runs its other code, and
    nothing was changed)."""
    global _broken
    if not available(acts):
        return None
    try:
        module = load()
    except Exception as error:   # no compiler or ninja, an unsupported platform, ...
        _broken = True
        log.warning("neurodbg: the scan's C++ layer kernel is unavailable (%s: %s); using the other code",
                    type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        return None
    buffers = [t for buffer in tails for t in (buffer.keys, buffer.fill, buffer.bound)]
    out = module.layer_stats(acts, size, skip_first, lowest_keys, buffers, reads, [b.sign for b in tails], totals)
    return [tuple(out[4 * e: 4 * e + 4]) for e in range(2)]
