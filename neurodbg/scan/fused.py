"""Fused per-batch reductions of one site's activations on CPU: the block extremes
(per block of a few tokens, then per sequence) and the float32 sums behind mean, std
and fraction active, in one compiled kernel.

Eager, these are about nine passes over the activations (max, min, three sums, the
squares and the positive indicator written and read again); `torch.compile`
(inductor) fuses them, which measured about twice as fast on the 2-core test machine,
where the statistics compete with the forward for memory bandwidth. Compiling takes
~25 s and needs a C++ compiler at run time, so a scan switches to it only after
`FUSE_AFTER_TOKENS` tokens of full batches (a short scan never pays for the compile),
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

FUSE_AFTER_TOKENS = 20_000   # ~40 batches of the default 8 x 64: a compile costs about ten of them
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
    block_hi, block_lo = blocks.amax(2), blocks.amin(2)
    total = counted.sum((0, 1))
    total_sq = (counted * counted).sum((0, 1))
    active = (counted > 0).sum((0, 1))
    return block_hi, block_lo, block_hi.amax(1), block_lo.amin(1), total, total_sq, active


def available(acts: torch.Tensor) -> bool:
    return acts.device.type == "cpu" and not _broken and os.environ.get(DISABLE_ENV, "") in ("", "0")


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
