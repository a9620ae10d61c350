"""Trace one image: what a site's channels do with it.

A channel of a convolution's output [C, H, W] is a neuron; its feature map is its
activation at each position. For a transformer's [tokens, hidden] output the hidden
units are the channels and the patch tokens the positions; a vector site (pooled
features, logits) has one position. Per channel: the largest and the mean
activation over positions, and where the largest one is; the brightest channel is
the one with the largest maximum. At the logits, the class probabilities."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from neurodbg.errors import ImageError, NeuronIndexError
from neurodbg.model import Model
from neurodbg.trace.interventions import Intervention
from neurodbg.vision.images import ImageLike, batch_of, to_pil


@dataclass
class ImageTrace:
    model: str
    site: str
    shape: list[int]               # the site's output for this image, batch axis dropped
    maps: torch.Tensor             # [channels, H, W] (a token sequence with a square patch grid too), or [channels, P]
    image: Image.Image
    top: int
    labels: list[str] | None = None
    logits: torch.Tensor | None = None      # [classes] when the site is the logits

    @property
    def channels(self) -> int:
        return int(self.maps.shape[0])

    @property
    def maxima(self) -> torch.Tensor:
        return self.maps.flatten(1).amax(1)

    @property
    def means(self) -> torch.Tensor:
        return self.maps.flatten(1).mean(1)

    @property
    def brightest(self) -> int:
        return int(self.maxima.argmax())

    def ranked(self) -> list[int]:
        """Channels by their largest activation, highest first (ties: lower index first)."""
        order = sorted(range(self.channels), key=lambda c: (-float(self.maxima[c]), c))
        return order[: self.top]

    def peak(self, channel: int) -> list[int]:
        """Where the channel's largest activation is: [row, column] on a map, [position] otherwise."""
        flat = int(self.maps[channel].flatten().argmax())
        if self.maps.dim() == 3:
            return [flat // int(self.maps.shape[2]), flat % int(self.maps.shape[2])]
        return [flat]

    def classes(self, limit: int | None = None) -> list[dict[str, Any]]:
        """{class, label, prob} sorted by probability (the logits site only)."""
        if self.logits is None:
            return []
        probs = torch.softmax(self.logits.double(), -1)
        order = sorted(range(len(probs)), key=lambda i: (-float(probs[i]), i))[: limit or len(probs)]
        return [{"class": i, "label": self.labels[i] if self.labels and i < len(self.labels) else str(i),
                 "prob": float(probs[i])} for i in order]

    def to_dict(self) -> dict[str, Any]:
        maxima, means = self.maxima, self.means
        out: dict[str, Any] = {
            "model": self.model, "site": self.site, "shape": self.shape, "channels": self.channels,
            "map_shape": list(self.maps.shape[1:]), "brightest": self.brightest,
            "top": [{"channel": c, "max": _num(maxima[c]), "mean": _num(means[c]), "peak": self.peak(c)}
                    for c in self.ranked()],
        }
        if self.logits is not None:
            out["classes"] = self.classes(self.top)
        return out

    def to_view(self, *, maps: int = 16, side: int = 64) -> dict[str, Any]:
        """`to_dict` plus the strongest channels' feature maps as numbers (rounded; a map wider than
        `side` is average-pooled down to it), for the web app to draw."""
        out = self.to_dict()
        shown = self.ranked()[:maps] if self.maps.dim() == 3 else []
        for row in out["top"]:
            c = row["channel"]
            if c in shown:
                grid = self.maps[c]
                if max(grid.shape) > side:
                    grid = torch.nn.functional.adaptive_avg_pool2d(grid[None, None], side)[0, 0]
                row["map"] = [[round(float(v), 4) for v in line] for line in grid]
        return out

    def figure(self, path: str | Path, *, channel: int | None = None, grid: int = 16) -> Path:
        from neurodbg.viz.vision import image_trace_figure

        if channel is not None and not 0 <= channel < self.channels:
            raise NeuronIndexError(f"channel {channel} out of range for {self.site} (0-{self.channels - 1})")
        return image_trace_figure(self, Path(path), channel=self.brightest if channel is None else channel, grid=grid)


def _num(x: torch.Tensor) -> float | None:
    value = float(x)
    return value if math.isfinite(value) else None


def _as_maps(value: torch.Tensor) -> torch.Tensor:
    """One image's site output as [channels, positions...]."""
    if value.dim() == 3:                      # conv: [C, H, W]
        return value
    if value.dim() == 2:                      # tokens: [T, hidden] -> [hidden, T], as a grid when square
        maps = value.transpose(0, 1)
        t = maps.shape[1]
        for skip in range(6):                 # after leading class, distillation or register tokens: the patch grid
            side = math.isqrt(t - skip)
            if side > 1 and side * side == t - skip:
                return maps[:, skip:].reshape(maps.shape[0], side, side)
        return maps
    if value.dim() == 1:                      # a vector: one position per unit
        return value.reshape(-1, 1)
    raise ImageError(f"cannot read a site output of shape {list(value.shape)} as channels")


def trace_image(model: Model, image: ImageLike, site: str, *, top: int = 10,
                interventions: Iterable[Intervention | Mapping[str, Any]] = ()) -> ImageTrace:
    """Run one image through `model` and read `site` (a canonical name or a raw path)."""
    if top < 1:
        raise ImageError("top must be at least 1")
    target = model.site(site)
    picture = to_pil(image)
    batch = batch_of(model, [picture])
    tr = model.run(batch, capture=[target.name], interventions=interventions)
    value = tr[target.name][0].detach().float().cpu()
    maps = _as_maps(value)
    output = tr.output if isinstance(tr.output, torch.Tensor) else getattr(tr.output, "logits", None)
    is_logits = target.name == "logits" or (isinstance(output, torch.Tensor) and value.shape == output.shape[1:]
                                            and value.dim() == 1 and torch.equal(value, output[0].float().cpu()))
    return ImageTrace(model.name, target.name, list(value.shape), maps, picture, top, model.labels,
                      value if is_logits else None)


def image_view(model: Model, image: ImageLike, site: str, *, top: int = 16) -> dict[str, Any]:
    """What the web app shows for one image: the site's channels with their feature maps
    (`ImageTrace.to_view`), and the classes (the logits traced too when the site is not them)."""
    picture = to_pil(image)
    result = trace_image(model, picture, site, top=top)
    out = result.to_view()
    if result.logits is not None:
        out["classes"] = result.classes(10)
    else:
        out["classes"] = trace_image(model, picture, "logits").classes(10) if "logits" in model.sites else []
    out["image_size"] = list(picture.size)
    return out
