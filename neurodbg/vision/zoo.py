"""Vision models by name: the embedded `digits` CNN, and torchvision's classifiers
(`resnet18`, `vgg16`, `mobilenet_v3_small`, `efficientnet_b0`, `convnext_tiny`,
`vit_b_16`, … — every name `torchvision.models.list_models` gives) with the user's
weights file, or with seeded random weights for structure and site coverage.
Each comes with its preprocessing (the weights' own `transforms()` for
torchvision) and its class names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from neurodbg.errors import ModelLoadError
from neurodbg.model import Model


def digits_preprocess(image: Image.Image) -> torch.Tensor:
    """Any image -> the digits' input: greyscale, 8x8 (area-averaged), intensities in [0, 1].
    The digits are light strokes on a dark ground."""
    small = image.convert("L").resize((8, 8), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(small, dtype=np.float32).copy()).reshape(1, 8, 8) / 255.0


def torchvision_names() -> list[str]:
    from neurodbg.vision.torchvision_import import import_torchvision

    return list(import_torchvision().models.list_models(module=import_torchvision().models))


def is_vision_name(name: str) -> bool:
    if name == "digits":
        return True
    if Path(name).exists() or "/" in name or not name.replace("_", "").isalnum():
        return False
    try:
        return name in torchvision_names()
    except ModelLoadError:
        return False


def load_vision_model(name: str, *, weights: str | os.PathLike[str] | None = None, progress: bool = True) -> Model:
    if name == "digits":
        if weights is not None:
            raise ModelLoadError("the digits CNN is embedded; --weights is for torchvision models")
        from neurodbg.vision.digits_cnn import LABELS, load_digits_cnn

        cnn = load_digits_cnn(progress=progress)
        return Model(cnn.module, name="digits", source=f"digits CNN ({cnn.accuracy:.1%} held-out accuracy)",
                     preprocess=digits_preprocess, labels=list(LABELS))
    tv = __import__("neurodbg.vision.torchvision_import", fromlist=["import_torchvision"]).import_torchvision()
    if name not in torchvision_names():
        raise ModelLoadError(f"unknown vision model {name!r}; try digits or a torchvision name such as resnet18")
    torch.manual_seed(0)                  # random weights: the same on every load
    module = tv.models.get_model(name, weights=None)
    label = f"{name} (random weights)"
    if weights is not None:
        _load_weights(module, Path(weights))
        label = f"{name} ({Path(weights).name})"
    module.eval()
    default = tv.models.get_model_weights(name).DEFAULT
    transform = default.transforms()
    categories = list(default.meta.get("categories") or []) or None
    return Model(module, name=name, source=label, preprocess=transform, labels=categories)


def _load_weights(module: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ModelLoadError(f"no such weights file: {path}")
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:           # torch raises many types for a bad file
        raise ModelLoadError(f"cannot read weights {path}: {str(exc).splitlines()[0]}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path} does not hold a state dict")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise ModelLoadError(f"{path} does not fit {type(module).__name__}: {first}") from None


def open_vision_model(source: str, *, weights: str | os.PathLike[str] | None = None, progress: bool = True) -> Model:
    """What the vision commands load: `digits`, a torchvision name, or a Hugging Face model directory
    (never a hub download: an unknown name is an error with the nearest known names)."""
    if is_vision_name(source):
        return load_vision_model(source, weights=weights, progress=progress)
    if Path(source).expanduser().exists():
        from neurodbg.models.loader import load_model

        return load_model(source, weights=weights, progress=progress)
    import difflib

    near = difflib.get_close_matches(source, ["digits", *torchvision_names()], n=3)
    raise ModelLoadError(f"unknown vision model {source!r}" + (f"; did you mean {', '.join(near)}?" if near else
                         "; give digits, a torchvision name such as resnet18, or a model directory"))
