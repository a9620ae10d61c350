"""Build-once C++ kernels (the scan's layer kernel, the training watcher's, activation
maximisation's): a source file compiled with torch's C++ extension loader (a C++ compiler
and ninja) for this machine's vector instructions and torch version, kept under
$NEURODBG_HOME/kernels and imported from there by later processes.

A build runs in a directory of the process's own and moves the library into place in
one rename: torch's loader builds under a lock file in a shared directory and waits for
it forever if a process was killed while building, and a killed run must not hang its
rerun. `neurodbg build-kernels` builds every kernel (scripts/setup.sh runs it)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from neurodbg import paths

log = logging.getLogger(__name__)

# vector instructions by the CPU capability torch detected (the build cache is keyed by it,
# so a home directory shared by different machines never runs code built for another's)
ISA_FLAGS = {"AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
             "AVX2": ["-mavx2", "-mfma", "-mf16c"]}


def kernels_dir() -> Path:
    return paths.home() / "kernels"


class CppKernel:
    """One kernel: `source` defines its functions; `functions` are bound by torch's loader (None:
    the source binds them itself with PYBIND11_MODULE)."""

    def __init__(self, source: Path, stem: str, functions: list[str] | None, what: str) -> None:
        self.source, self.stem, self.functions, self.what = source, stem, functions, what
        self._module: Any = None
        self._lock = threading.Lock()

    def _target(self) -> tuple[str, str, list[str], Path]:
        source = with_headers(self.source)
        isa = torch.backends.cpu.get_cpu_capability()
        flags = ["-O3", "-fopenmp", *ISA_FLAGS.get(isa, [])]   # (without -fopenmp, at::parallel_for is serial)
        digest = hashlib.sha256("\n".join([source, torch.__version__, *flags]).encode()).hexdigest()[:12]
        name = f"{self.stem}_{isa.lower()}_{digest}"
        return name, source, flags, kernels_dir() / f"{name}.so"

    def built(self) -> Any:
        """The module when this machine already has its build (never builds), else None."""
        if self._module is None:
            name, _, _, library = self._target()
            if library.exists():
                with self._lock:
                    if self._module is None:
                        self._module = _import(name, library)
        return self._module

    def load(self) -> Any:
        """The module: imported from its kept build, else built here (raises if it cannot be)."""
        if self.built() is None:
            with self._lock:
                if self._module is None:
                    name, source, flags, library = self._target()
                    self._module = self._build(name, source, flags, library)
        return self._module

    def _build(self, name: str, source: str, flags: list[str], target: Path) -> Any:
        from torch.utils.cpp_extension import load_inline

        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(".build-*"):   # left by a build that was killed
            with contextlib.suppress(OSError):           # (or just finished by another process)
                if time.time() - stale.stat().st_mtime > 3600:
                    shutil.rmtree(stale, ignore_errors=True)
        log.warning("neurodbg: building %s for this machine (once; ~30 s on 2 cores)", self.what)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as work:
            module = load_inline(name=name, cpp_sources=[source], functions=self.functions, extra_cflags=flags,
                                 extra_ldflags=["-fopenmp"], build_directory=work, verbose=False)
            os.replace(Path(work) / f"{name}.so", target)
        return module


# `#include "name.h"` of a header of neurodbg's own (beside this file): put in place in the
# source, so that the build (one inline source) and its cache key cover the header too
_LOCAL_INCLUDE = re.compile(r'^#include "([a-z_]+\.h)".*$', re.MULTILINE)
HEADERS = Path(__file__).parent


def with_headers(source: Path) -> str:
    return _LOCAL_INCLUDE.sub(lambda m: (HEADERS / m.group(1)).read_text(), source.read_text())


def _import(name: str, library: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, library)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {library}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_all() -> list[tuple[str, str | None]]:
    """Build every kernel this machine lacks: (what, None) for each built or already there, (what, why
    not) for each that cannot be (the code beside each kernel then runs without it)."""
    from neurodbg.scan import image_kernel, layer_kernel
    from neurodbg.train import watch_kernel
    from neurodbg.vision import small_ascent

    out: list[tuple[str, str | None]] = []
    for kernel in (layer_kernel.KERNEL, image_kernel.KERNEL, watch_kernel.KERNEL, small_ascent.KERNEL):
        try:
            kernel.load()
            out.append((kernel.what, None))
        except Exception as error:
            out.append((kernel.what, (str(error).splitlines() or [type(error).__name__])[0]))
    return out
