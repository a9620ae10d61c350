"""Images in: files (PNG, JPEG, … — whatever Pillow decodes), folders of them,
NumPy arrays and tensors, turned into the batch a model takes through the model's
own preprocessing (`Model.preprocess`).

Decoding is bounded: a file larger than `MAX_FILE_BYTES` or an image of more than
`MAX_PIXELS` pixels (a decompression bomb) is refused before it is decoded."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from neurodbg.errors import ImageError

MAX_FILE_BYTES = 64 << 20
MAX_PIXELS = 64_000_000
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

ImageLike = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor


def open_image(source: str | os.PathLike[str] | bytes, *, name: str | None = None) -> Image.Image:
    """Decode one image file (or its bytes) into an RGB or greyscale PIL image, fully loaded."""
    import io

    label = name or (str(source) if not isinstance(source, bytes) else "the image")
    if isinstance(source, bytes):
        if len(source) > MAX_FILE_BYTES:
            raise ImageError(f"{label} is {len(source):,} bytes; the limit is {MAX_FILE_BYTES:,}")
        handle: Any = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"no such image file: {path}" if not path.exists() else f"{path} is not a file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(f"{path} is {path.stat().st_size:,} bytes; the limit is {MAX_FILE_BYTES:,}")
        handle = path
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(handle) as img:
            img.load()
            return img.convert("L") if img.mode in ("1", "L", "I;16", "I", "F") else img.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        reason = "too many pixels" if isinstance(exc, Image.DecompressionBombError) else \
            "not an image Pillow can decode" if isinstance(exc, UnidentifiedImageError) else str(exc).splitlines()[0]
        raise ImageError(f"cannot read {label}: {reason}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files directly in `folder`, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise ImageError(f"no such folder: {root}" if not root.exists() else f"{root} is not a folder")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise ImageError(f"{root} holds no image files ({', '.join(EXTENSIONS)})")
    return files


def to_pil(image: ImageLike) -> Image.Image:
    """A PIL image from a path, a PIL image, or an [H, W], [H, W, C] (uint8, or floats in [0, 1])
    array or tensor ([C, H, W] tensors too)."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        return open_image(image)
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    channels_first = array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[2] not in (1, 3)
    if isinstance(image, torch.Tensor) and channels_first:
        array = array.transpose(1, 2, 0)                      # [C, H, W] -> [H, W, C]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"an image array must be [H, W] or [H, W, 3|4]; got shape {list(array.shape)}")
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise ImageError("the image array holds NaN or infinite values")
        if values.min() < 0 or values.max() > 1:
            raise ImageError("a float image array must hold values in [0, 1] (or give uint8 pixels)")
        array = np.round(values * 255).astype(np.uint8)
    img = Image.fromarray(array)
    return img.convert("RGB") if img.mode == "RGBA" else img


def batch_of(model: Any, images: Sequence[ImageLike] | ImageLike) -> torch.Tensor:
    """The model's input batch [N, C, H, W] for one or several images, through `model.preprocess`.
    A 4-D tensor is taken as an already preprocessed batch."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return images.to(model.device)
    items: Sequence[ImageLike] = images if isinstance(images, (list, tuple)) else [images]  # type: ignore[list-item]
    if model.preprocess is None:
        raise ImageError(f"{model.name} has no image preprocessing; pass a preprocessed [N, C, H, W] tensor "
                         f"or give one (Model(..., preprocess=...))")
    tensors = [model.preprocess(to_pil(one)) for one in items]
    if not tensors:
        raise ImageError("no images given")
    return torch.stack(tensors).to(model.device)
