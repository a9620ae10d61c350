"""Fused per-batch reductions of one site's activations on CPU: the block extremes
(per block of a few tokens, then per sequence) and the float32 sums behind mean, std
and fraction active, in one compiled kernel.

Eager, these are about nine passes over the activations (max, min, three sums, the
squares and the positive indicator written and read again); `torch.compile`
(inductor) fuses them, which measured about twice as fast on the 2-core test machine,
where the statistics compete with the forward for memory bandwidth, and on an H200
(Triton) saves ~10 ms of ~45 per batch of 1024 x 64. Compiling takes ~25 s on that
CPU (and needs a C++ compiler at run time), ~10 s on a GPU, so a scan switches to it
only after `FUSE_AFTER_TOKENS` tokens of full batches (a short scan never pays for it),
and a failure to compile turns it off for the process, falling back to the eager
code. The extremes and counts are identical either way; the float32 sums differ only
in rounding (summation order)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

# tokens of a scan before it compiles, per device type: about three times what the compile
# costs in scan time (~25 s on the 2-core CPU at ~260 tokens/s; ~10 s on a GPU at ~150k
# tokens/s, where the kernel saves ~10 ms per 65k-token batch, a few percent)
FUSE_AFTER_TOKENS = {"cpu": 20_000, "cuda": 10_000_000}
DISABLE_ENV = "NEURODBG_NO_COMPILE"

Fused = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

_compiled: Callable[..., Any] | None = None
_broken = False


def reductions(acts: torch.Tensor, size: int, skip_first: bool) -> Fused:
    """acts [B, L, width] float32 -> block maxima and minima [B, L' / size, width],
    sequence maxima and minima [B, width], and over the counted tokens (all but position
    0 when `skip_first`) the sums of x, x^2 and the count of x > 0 [width]."""
    counted = acts[:, 1:] if skip_first else acts
    batch, length, width = counted.shape
    blocks = counted.view(batch, length // size, size, width)
    # a running maximum over the block's token slices, not amax(2): inductor then emits a
    # pointwise kernel reading along the neurons (coalesced on a GPU; a reduction over the
    # strided token dimension ran at a fifth of the memory bandwidth), same values
    block_hi = block_lo = blocks[:, :, 0]
    for j in range(1, size):
        block_hi, block_lo = torch.maximum(block_hi, blocks[:, :, j]), torch.minimum(block_lo, blocks[:, :, j])
    total = counted.sum((0, 1))
    total_sq = (counted * counted).sum((0, 1))
    active = (counted > 0).sum((0, 1))
    return block_hi, block_lo, block_hi.amax(1), block_lo.amin(1), total, total_sq, active


def fuse_after_tokens(device: torch.device) -> int | None:
    """When a scan on `device` switches to the compiled reductions (None: never)."""
    return FUSE_AFTER_TOKENS.get(device.type)


def available(acts: torch.Tensor) -> bool:
    return acts.device.type in ("cpu", "cuda") and not _broken and os.environ.get(DISABLE_ENV, "") in ("", "0")


def fused_reductions(acts: torch.Tensor, size: int, skip_first: bool) -> Fused | None:
    """`reductions` compiled; None when compiling is off or failed (the caller then runs
    its eager code)."""
    global _compiled, _broken
    if not available(acts):
        return None
    try:
        if _compiled is None:
            # (one compiled function: dynamo keys its cache by shape, `dynamic=False` keeps
            # each shape's kernel specialised)
            _compiled = torch.compile(reductions, dynamic=False)
        out: Fused = _compiled(acts, size, skip_first)
        return out
    except Exception as error:   # no C++ compiler, an unsupported platform, ...
        _broken = True
        log.warning("neurodbg: compiled scan statistics unavailable (%s: %s); using the eager code",
                    type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        return None
