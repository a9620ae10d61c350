"""Image corpora for a scan: `digits` (scikit-learn's 1,797 digits, inside its wheel)
or a folder. A folder of images is read in name order; a folder whose subfolders
hold the images (`DIR/cat/1.png`, `DIR/dog/7.jpg`, as torchvision's `ImageFolder`)
gives each image its subfolder as a label. Images are decoded one at a time,
bounded like every image neurodbg opens (`images.open_image`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from neurodbg.errors import ImageError
from neurodbg.vision.images import EXTENSIONS, open_image


@dataclass
class ImageCorpus:
    name: str
    size: int
    label_names: list[str] | None = None     # None: the images carry no labels
    _files: list[Path] = field(default_factory=list)
    _labels: list[int] = field(default_factory=list)
    _arrays: np.ndarray | None = None        # in-memory uint8 images (digits)
    _fingerprint: str | None = None

    def __len__(self) -> int:
        return self.size

    def image(self, index: int) -> Image.Image:
        if not 0 <= index < self.size:
            raise ImageError(f"image {index} is out of range (the corpus has {self.size:,})")
        if self._arrays is not None:
            return Image.fromarray(self._arrays[index])
        return open_image(self._files[index])

    def label(self, index: int) -> int:
        """The image's label index, -1 when the corpus has none."""
        return self._labels[index] if self._labels else -1

    def item_name(self, index: int) -> str:
        if self._files:
            return str(self._files[index].relative_to(self._root()))
        return f"{self.name}[{index}]"

    def images(self, start: int = 0) -> Iterator[tuple[int, Image.Image]]:
        for index in range(start, self.size):
            yield index, self.image(index)

    def fingerprint(self) -> str:
        """The content: every image's bytes (and name and label), in order."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.name.encode() if self._arrays is not None else b"folder")
            h.update(repr(self.label_names).encode())
            if self._arrays is not None:
                h.update(self._arrays.tobytes())
                h.update(np.asarray(self._labels, dtype=np.int64).tobytes())
            else:
                for index, path in enumerate(self._files):
                    h.update(f"{self.item_name(index)}:{self.label(index)}:".encode())
                    h.update(hashlib.sha256(path.read_bytes()).digest())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _root(self) -> Path:
        common = self._files[0].parent
        return common.parent if self.label_names is not None else common


def digits_corpus() -> ImageCorpus:
    """scikit-learn's digits as 8x8 greyscale images (intensities 0-16 scaled to 0-255)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    arrays = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    return ImageCorpus("digits", len(arrays), [str(d) for d in range(10)], _labels=[int(t) for t in data.target],
                       _arrays=arrays)


def folder_corpus(folder: str | Path) -> ImageCorpus:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ImageError(f"no such folder: {root}" if not root.exists() else f"{root} is not a folder")

    def images_in(directory: Path) -> list[Path]:
        return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)

    flat = images_in(root)
    classes = sorted(d for d in root.iterdir() if d.is_dir() and images_in(d))
    if flat or not classes:
        if not flat:
            raise ImageError(f"{root} holds no image files ({', '.join(EXTENSIONS)}), directly or in subfolders")
        return ImageCorpus(root.name or str(root), len(flat), None, _files=flat)
    files, labels = [], []
    for label, directory in enumerate(classes):
        found = images_in(directory)
        files += found
        labels += [label] * len(found)
    return ImageCorpus(root.name or str(root), len(files), [d.name for d in classes], _files=files, _labels=labels)


def open_image_corpus(spec: str | Path) -> ImageCorpus:
    """`digits` or a folder (flat, or one subfolder per class)."""
    if str(spec) == "digits":
        return digits_corpus()
    return folder_corpus(spec)
