"""neurodbg: a debugger and microscope for neural networks."""

# first: torchvision (which transformers imports whenever it is installed) must import cleanly
from neurodbg.vision.torchvision_import import install_import_hook

install_import_hook()

from neurodbg.errors import (
    BreakpointHit,
    ConfigError,
    InterventionError,
    ModelLoadError,
    NeurodbgError,
    NeuronIndexError,
    PromptError,
    RunError,
    UnknownSiteError,
    UnsupportedArchitectureError,
)
from neurodbg.model import Model
from neurodbg.models.loader import load_model
from neurodbg.trace import (
    Ablate,
    Add,
    AddVector,
    Clamp,
    InterventionSpec,
    Patch,
    Scale,
    SetValue,
    Trace,
)
from neurodbg.train import replay, watch

__version__ = "0.1.0"


def wrap(module: object, tokenizer: object = None) -> Model:
    """Wrap any torch nn.Module so its sites can be traced by raw path."""
    from torch import nn

    if not isinstance(module, nn.Module):
        raise TypeError(f"wrap() takes an nn.Module, not {type(module).__name__}")
    return Model(module, tokenizer)


__all__ = [
    "Ablate",
    "Add",
    "AddVector",
    "BreakpointHit",
    "Clamp",
    "ConfigError",
    "InterventionError",
    "InterventionSpec",
    "Model",
    "ModelLoadError",
    "NeurodbgError",
    "NeuronIndexError",
    "Patch",
    "PromptError",
    "RunError",
    "Scale",
    "SetValue",
    "Trace",
    "UnknownSiteError",
    "UnsupportedArchitectureError",
    "load_model",
    "replay",
    "watch",
    "wrap",
]
