"""torchvision for neurodbg: the import hook (`torchvision_hook`, which `import
neurodbg` installs) and `import_torchvision`, which fixes and imports it at once."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from neurodbg.errors import ModelLoadError
from neurodbg.vision.torchvision_hook import declare_missing_ops, install


def install_import_hook() -> None:
    install()


def import_torchvision() -> ModuleType:
    if importlib.util.find_spec("torchvision") is None:
        raise ModelLoadError("torchvision is not installed (pip install torchvision, matching your torch)")
    declare_missing_ops()
    import warnings

    with warnings.catch_warnings():          # "failed to load image Python extension": Pillow decodes here
        warnings.simplefilter("ignore", UserWarning)
        import torchvision
    return torchvision
