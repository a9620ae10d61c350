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
machine and torch version, kept under $NEURODBG_HOME/kernels) when a scan first reaches
`fused.FUSE_AFTER_TOKENS` tokens; if the build fails the scan goes on with the compiled
reductions or the eager code."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from neurodbg import paths
from neurodbg.scan.fused import DISABLE_ENV
from neurodbg.scan.tails import TailBuffer

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("layer_kernel.cpp")
# vector instructions by the CPU capability torch detected (the build cache is keyed by it,
# so a home directory shared by different machines never runs code built for another's)
ISA_FLAGS = {"AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
             "AVX2": ["-mavx2", "-mfma"]}

_module: Any = None
_broken = False


def available(acts: torch.Tensor) -> bool:
    return (acts.device.type == "cpu" and acts.dtype == torch.float32 and not _broken
            and os.environ.get(DISABLE_ENV, "") in ("", "0"))


def load() -> Any:
    """The kernel's module: imported from its kept build, else built (raises if it cannot be)."""
    global _module
    if _module is None:
        source = SOURCE.read_text()
        isa = torch.backends.cpu.get_cpu_capability()
        flags = ["-O3", "-fopenmp", *ISA_FLAGS.get(isa, [])]   # (without -fopenmp, at::parallel_for is serial)
        digest = hashlib.sha256("\n".join([source, torch.__version__, *flags]).encode()).hexdigest()[:12]
        name = f"neurodbg_layer_stats_{isa.lower()}_{digest}"
        built = kernels_dir() / f"{name}.so"
        _module = _import(name, built) if built.exists() else _build(name, source, flags, built)
    return _module


def kernels_dir() -> Path:
    return paths.home() / "kernels"


def _build(name: str, source: str, flags: list[str], target: Path) -> Any:
    """Build in a directory of this process's own, then move the library into place in one
    rename. (torch's loader builds under a lock file in a shared directory, and waits for
    it forever if a process was killed while building: a killed scan must not hang its rerun.)"""
    from torch.utils.cpp_extension import load_inline

    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(".build-*"):   # left by a build that was killed
        with contextlib.suppress(OSError):           # (or just finished by another process)
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
    log.warning("neurodbg: building the scan's C++ layer kernel for this machine (once; ~40 s on 2 cores)")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as work:
        module = load_inline(name=name, cpp_sources=[source], functions=["layer_stats"], extra_cflags=flags,
                             extra_ldflags=["-fopenmp"], build_directory=work, verbose=False)
        os.replace(Path(work) / f"{name}.so", target)
    return module


def _import(name: str, library: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, library)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {library}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
