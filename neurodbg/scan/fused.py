"""Fused per-batch reductions of one site's activations: the block extremes
(per block of a few tokens, then per sequence) and the float32 sums behind mean, std
and fraction active, in one compiled kernel (the sums finished by one matrix-vector product).

Eager, these are about nine passes over the activations (max, min, three sums, the
squares and the positive indicator written and read again); `torch.compile`
(inductor) fuses them, which measured about twice as fast on the 2-core test machine,
where the statistics compete with the forward for memory bandwidth, and on an H200
(Triton) saves ~10 ms of ~45 per batch of 1024 x 64. Compiling takes ~25 s on that
CPU (and needs a C++ compiler at run time), ~10 s on a GPU, so a scan switches to it
only after `FUSE_AFTER_TOKENS` tokens of full batches (a short scan never pays for it),
and a failure to compile turns it off for the process, falling back to the eager
code. The extremes and counts are identical either way; the float32 sums differ only
in rounding (summation order). A CPU takes the C++ layer kernel (layer_kernel.py)
after the same number of tokens instead, and this only where that cannot be built."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

# tokens of a scan before it takes the fast path, per device type. On a CPU that is the C++
# layer kernel, whose build (~40 s) happens once per machine and is kept, and which
# measured 2-3x faster than the eager code from the third batch of a scan on: after the
# first two batches of 8 (they fill the buffers; dense merges are as fast there), so a scan
# of a few sentences never builds it. On a GPU it is this module's compiled kernel, ~10 s to
# compile in every process at ~150k tokens/s, saving ~10 ms per 65k-token batch (a few
# percent): about three times its cost.
FUSE_AFTER_TOKENS = {"cpu": 1_000, "cuda": 10_000_000}
DISABLE_ENV = "NEURODBG_NO_COMPILE"

Fused = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

_compiled: dict[str, Callable[..., Any]] = {}   # device type -> compiled function
_broken = False


def _blocks(acts: torch.Tensor, size: int, skip_first: bool) -> torch.Tensor:
    counted = acts[:, 1:] if skip_first else acts
    batch, length, width = counted.shape
    return counted.view(batch, length // size, size, width)


def reductions(acts: torch.Tensor, size: int, skip_first: bool) -> Fused:
    """acts [B, L, width] float32 -> block maxima and minima [B, L' / size, width],
    sequence maxima and minima [B, width], and over the counted tokens (all but position
    0 when `skip_first`) the sums of x, x^2 and the count of x > 0 [width] (compiled as is
    on a GPU; see `block_reductions` for a CPU)."""
    blocks = _blocks(acts, size, skip_first)
    # a running maximum over the block's token slices, not amax(2): inductor then emits a
    # pointwise kernel reading along the neurons (coalesced on a GPU; a reduction over the
    # strided token dimension ran at a fifth of the memory bandwidth), same values
    block_hi = block_lo = blocks[:, :, 0]
    for j in range(1, blocks.shape[2]):
        block_hi, block_lo = torch.maximum(block_hi, blocks[:, :, j]), torch.minimum(block_lo, blocks[:, :, j])
    counted = blocks.flatten(1, 2)
    total = counted.sum((0, 1))
    total_sq = (counted * counted).sum((0, 1))
    active = (counted > 0).sum((0, 1))
    return block_hi, block_lo, block_hi.amax(1), block_lo.amin(1), total, total_sq, active


def block_reductions(acts: torch.Tensor, size: int, skip_first: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a CPU compiles instead of `reductions`: the same extremes, and the sums only per
    block, stacked [B, L' / size, 3, width] (x, x^2, the count of x > 0); `sum_blocks`
    finishes them. Summed over all tokens inside the kernel, the sums became a loop down
    the tokens for each few neurons, which read activations not in cache at half the speed
    (25 -> 18 ms per batch of all layers on the 2-core test machine). (On a GPU the
    partial sums would add a third to the memory a batch of 1024 needs.)"""
    blocks = _blocks(acts, size, skip_first)
    x = blocks[:, :, 0]
    block_hi = block_lo = total = x
    square, positive = x * x, (x > 0).float()
    for j in range(1, blocks.shape[2]):
        x = blocks[:, :, j]
        block_hi, block_lo = torch.maximum(block_hi, x), torch.minimum(block_lo, x)
        total, square, positive = total + x, square + x * x, positive + (x > 0).float()
    return block_hi, block_lo, block_hi.amax(1), block_lo.amin(1), torch.stack([total, square, positive], 2)


def sum_blocks(partials: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, blocks, 3, width] -> the sums over all blocks (one matrix-vector product, which
    reads the partials in order); the counts are exact in float32."""
    rows = partials.shape[0] * partials.shape[1]
    total, total_sq, active = (partials.new_ones((1, rows)) @ partials.view(rows, -1)).view(3, -1)
    return total, total_sq, active


def fuse_after_tokens(device: torch.device) -> int | None:
    """When a scan on `device` switches to the compiled reductions (None: never)."""
    return FUSE_AFTER_TOKENS.get(device.type)


def available(acts: torch.Tensor) -> bool:
    return acts.device.type in ("cpu", "cuda") and not _broken and os.environ.get(DISABLE_ENV, "") in ("", "0")


def fused_reductions(acts: torch.Tensor, size: int, skip_first: bool) -> Fused | None:
    """`reductions`, compiled (on a CPU by way of `block_reductions`); None when compiling is
    off or failed (the caller then runs its eager code)."""
    global _broken
    if not available(acts):
        return None
    try:
        device = acts.device.type
        if device not in _compiled:
            # (one compiled function: dynamo keys its cache by shape, `dynamic=False` keeps
            # each shape's kernel specialised)
            _compiled[device] = torch.compile(reductions if device == "cuda" else block_reductions, dynamic=False)
        if device == "cuda":
            out: Fused = _compiled[device](acts, size, skip_first)
            return out
        *extremes, partials = _compiled[device](acts, size, skip_first)
        return (*extremes, *sum_blocks(partials))
    except Exception as error:   # no C++ compiler, an unsupported platform, ...
        _broken = True
        log.warning("neurodbg: compiled scan statistics unavailable (%s: %s); using the eager code",
                    type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        return None
