"""What pixels a vision model takes: channels, side, and the normalisation its
preprocessing applies — what activation maximisation needs to optimise an image in
plain [0, 1] pixel space and hand the model what its own preprocessing would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from neurodbg.errors import ImageError
from neurodbg.model import Model


@dataclass(frozen=True)
class InputSpec:
    channels: int
    size: int                              # square side in pixels
    mean: tuple[float, ...] | None = None  # per channel, subtracted after scaling to [0, 1]
    std: tuple[float, ...] | None = None

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] in [0, 1] -> what the model takes."""
        if self.mean is None or self.std is None:
            return pixels
        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)
        return (pixels - mean) / std


def _side(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and value:
        return int(value[0])
    if isinstance(value, dict):
        for key in ("height", "shortest_edge", "width"):
            if isinstance(value.get(key), int):
                return int(value[key])
    return None


def input_spec(model: Model, *, size: int | None = None) -> InputSpec:
    """The model's input, read from its preprocessing (a probe image through it when nothing
    else says): the digits CNN, torchvision weights' transforms, Hugging Face image processors."""
    if model.preprocess is None:
        raise ImageError(f"{model.name} has no image preprocessing to read its input from")
    transform: Any = model.preprocess
    processor = getattr(transform, "processor", None)
    mean = getattr(transform, "mean", None) or getattr(processor, "image_mean", None)
    std = getattr(transform, "std", None) or getattr(processor, "image_std", None)
    side = size or _side(getattr(transform, "crop_size", None)) or _side(getattr(processor, "crop_size", None)) \
        or _side(getattr(processor, "size", None))
    from PIL import Image

    probe = transform(Image.new("RGB", (side or 64, side or 64), (128, 128, 128)))
    channels = int(probe.shape[0])
    side = side or int(probe.shape[-1])
    return InputSpec(channels, side, tuple(float(m) for m in mean) if mean is not None else None,
                     tuple(float(s) for s in std) if std is not None else None)
