"""One C++ call per image site and batch for all its scan statistics (image_kernel.cpp),
the state kept in the site's own tensors and updated in place.

A small CNN's forward costs little per value (the digits CNN: ~2 ns), so a scan that
reads each feature map with tensor operations, gathers candidates and merges them in
Python costs several forwards; the layer kernel (layer_kernel.py) still returns its
candidates to Python and reads token-major rows, which a small map must first be copied
into. Here a map is read where the convolution wrote it, and exemplars, tail values,
histogram counts and the random sample's maps go straight into their places.

The kernel is used when this machine has it built (`neurodbg build-kernels`, run by
scripts/setup.sh) or, as the layer kernel, built once a scan has settled (see
`SiteStats._settled`); `NEURODBG_NO_COMPILE=1` turns it off with the other kernels."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from neurodbg.cpp_kernel import CppKernel
from neurodbg.scan.fused import DISABLE_ENV
from neurodbg.scan.settings import ScanSettings

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("image_kernel.cpp")
KERNEL = CppKernel(SOURCE, "neurodbg_image_site", None, "the image scan's C++ kernel")
_broken = False


def maps_of(acts: torch.Tensor) -> bool:
    """Whether a site's output is one the kernel reads as it lies: a CPU float32 feature map
    [B, C, H, W] or vector [B, N], contiguous."""
    return (acts.device.type == "cpu" and acts.dtype == torch.float32 and acts.dim() in (2, 4)
            and acts.is_contiguous())


def fits(settings: ScanSettings) -> bool:
    """Whether the kernel holds these settings' state (a table of at most 256 histogram bins, at
    least one exemplar and one tail value per side)."""
    return settings.hist_bins <= 256 and settings.top_k >= 1 and settings.tail_capacity >= 1


def module(settled: bool) -> Any:
    """The kernel's module if it is built (or, once `settled`, can be built here), else None."""
    global _broken
    if _broken or os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None
    built = KERNEL.built()
    if built is not None or not settled:
        return built
    try:
        return KERNEL.load()
    except Exception as error:   # no compiler or ninja, an unsupported platform, ...
        _broken = True
        log.warning("neurodbg: the image scan's C++ kernel is unavailable (%s: %s); using the other code",
                    type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        return None
