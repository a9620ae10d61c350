"""Make torchvision importable where its compiled operators cannot load — for any
importer, in any process.

PyPI's torchvision wheels are built against CUDA builds of torch; beside a CPU-only
torch (as on these machines, where the CPU wheel of torch comes from a local folder
and download.pytorch.org is out of reach) their `_C` library fails to load, and
`import torchvision` then fails on a registration for the `nms` operator that does
not exist. transformers imports torchvision whenever it is installed, so without a
fix every transformers model import fails — in neurodbg, in `transformers serve`,
in a Ray worker.

The fix declares the two operator schemas that registration expects — schemas only,
no kernels: detection operators stay unavailable and say so when called — and only
when the library cannot load. `install()` puts a meta-path finder in place that
applies it just before the first import of torchvision and then steps aside; until
then nothing is imported (this module uses the standard library only, so that
`scripts/setup.sh` can install it as a start-up hook of the virtual environment,
next to a `.pth` file that calls `install()`)."""

from __future__ import annotations

import sys
from typing import Any

# (importlib.util and pathlib are imported when torchvision is: this module runs at every start-up)

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_library: Any = None          # kept alive: dropping it would undo the definitions


def declare_missing_ops() -> None:
    """Declare torchvision's `nms` schemas when its operator library cannot load (idempotent)."""
    global _library
    if _library is not None or "torchvision" in sys.modules:
        return
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    if _ops_load(Path(next(iter(spec.submodule_search_locations)))) or hasattr(torch.ops.torchvision, "nms"):
        return
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)


def _ops_load(folder: Any) -> bool:
    import torch

    for library in folder.glob("_C*.so"):
        try:
            torch.ops.load_library(str(library))
            return True
        except (OSError, RuntimeError):
            return False
    return False


class BeforeTorchvision:
    """A meta-path finder (it finds nothing) that runs `declare_missing_ops` when torchvision is first
    imported, then steps aside."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torchvision":
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            declare_missing_ops()
        return None


def install() -> None:
    if "torchvision" not in sys.modules and not any(type(f).__name__ == "BeforeTorchvision" for f in sys.meta_path):
        sys.meta_path.insert(0, BeforeTorchvision())
