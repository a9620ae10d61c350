"""`neurodbg build-kernels`."""

from __future__ import annotations

from neurodbg.cli.common import JsonOpt, console, emit_json
from neurodbg.cpp_kernel import build_all, kernels_dir


def build_kernels(json_out: JsonOpt = False) -> None:
    """Build the C++ kernels (the scan's, the training watcher's) for this machine, once; without them
    the same figures come from slower code."""
    results = build_all()
    if json_out:
        emit_json([{"kernel": what, "built": why is None, "error": why} for what, why in results])
        return
    for what, why in results:
        console.print(f"{what}: " + (f"ready in {kernels_dir()}" if why is None else f"cannot be built here ({why})"))
