"""Held-out scikit-learn digits written as PNG files, for the vision tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save_digit(index: int, path: Path) -> Path:
    """Held-out digit `index` as a 64x64 PNG (light strokes on a dark ground, as in the data)."""
    from neurodbg.train.digits import digits_data

    pixels = (digits_data().x_val[index].reshape(8, 8).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).resize((64, 64), Image.Resampling.NEAREST).save(path)
    return path


def first_held_out(label: int) -> int:
    """The index of the first held-out digit showing `label`."""
    from neurodbg.train.digits import digits_data

    return int((digits_data().y_val == label).nonzero()[0])
