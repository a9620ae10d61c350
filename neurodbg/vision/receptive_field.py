"""Where a site's positions look in the input: each position's grid cell and its
receptive field, measured rather than derived from layer arithmetic (so it holds for
any module): the input pixels with a non-zero gradient for the activations at the
feature map's centre, over a few random inputs, give the field's extent around a
position; shifted by the site's stride it holds for every position (convolutions
are translation-equivariant), clipped to the image.

A site's positions are a grid of rows x cols, after `skip` leading positions that
are not on the grid (a vision transformer's class token): their field is the whole image."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from neurodbg.model import Model

PROBES = 4      # random inputs whose fields are united (a ReLU can close a path for one input)


@dataclass(frozen=True)
class PositionGrid:
    rows: int
    cols: int
    skip: int                         # leading positions off the grid
    height: int                       # the input's size in pixels
    width: int
    before: tuple[int, int]           # field start relative to the position's origin (rows, cols)
    after: tuple[int, int]            # field end (inclusive)

    @property
    def stride(self) -> tuple[float, float]:
        return self.height / self.rows, self.width / self.cols

    @property
    def positions(self) -> int:
        return self.skip + self.rows * self.cols

    def cell(self, position: int) -> tuple[int, int] | None:
        """(row, col) of a position on the grid; None for the skipped ones."""
        if position < self.skip:
            return None
        return divmod(position - self.skip, self.cols)

    def field(self, position: int) -> tuple[int, int, int, int]:
        """The receptive field of a position as (top, left, bottom, right), inclusive, in input pixels."""
        cell = self.cell(position)
        if cell is None:
            return 0, 0, self.height - 1, self.width - 1
        sy, sx = self.stride
        oy, ox = math.floor(cell[0] * sy), math.floor(cell[1] * sx)
        return (max(0, oy + self.before[0]), max(0, ox + self.before[1]),
                min(self.height - 1, oy + self.after[0]), min(self.width - 1, ox + self.after[1]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PositionGrid:
        return cls(**{**data, "before": tuple(data["before"]), "after": tuple(data["after"])})


def _grid_shape(value: torch.Tensor) -> tuple[int, int, int]:
    """(rows, cols, skip) of one site output [1, ...]."""
    if value.dim() == 4:                       # [1, C, H, W]
        return int(value.shape[2]), int(value.shape[3]), 0
    if value.dim() == 3:                       # [1, T, D] tokens: the patch grid after leading tokens
        t = int(value.shape[1])
        for skip in range(6):
            side = math.isqrt(t - skip) if t > skip else 0
            if side > 1 and side * side == t - skip:
                return side, side, skip
        return 1, t, 0
    return 1, 1, 0                             # a vector: one position


def _position(value: torch.Tensor, row: int, col: int, skip: int, cols: int) -> torch.Tensor:
    """The activations [N, units] at one grid position."""
    if value.dim() == 4:
        return value[:, :, row, col]
    if value.dim() == 3:
        return value[:, skip + row * cols + col]
    return value.reshape(value.shape[0], -1)


def position_grids(model: Model, sites: list[str], channels: int, size: int) -> dict[str, PositionGrid]:
    """Each site's grid and receptive field, for [channels, size, size] inputs."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn((PROBES, channels, size, size), generator=generator).to(model.device)
    pixels.requires_grad_(True)
    outputs: dict[str, torch.Tensor] = {}
    with model.trace(capture=sites, sink=lambda name, value: outputs.__setitem__(name, value)) as tr:
        tr.forward(pixels, grad=True)
    grids: dict[str, PositionGrid] = {}
    for name in sites:
        value = outputs[name]
        rows, cols, skip = _grid_shape(value)
        if rows * cols == 1 or not value.requires_grad:
            grids[name] = PositionGrid(rows, cols, skip, size, size, (0, 0), (size - 1, size - 1))
            continue
        row, col = rows // 2, cols // 2
        (grad,) = torch.autograd.grad(_position(value, row, col, skip, cols).sum(), pixels, retain_graph=True)
        touched = grad.abs().sum(dim=(0, 1)) > 0                      # [H, W]
        ys, xs = touched.any(dim=1).nonzero().flatten(), touched.any(dim=0).nonzero().flatten()
        if len(ys) == 0:                                              # no path (a constant output)
            grids[name] = PositionGrid(rows, cols, skip, size, size, (0, 0), (size - 1, size - 1))
            continue
        oy, ox = math.floor(row * size / rows), math.floor(col * size / cols)
        grids[name] = PositionGrid(rows, cols, skip, size, size, (int(ys[0]) - oy, int(xs[0]) - ox),
                                   (int(ys[-1]) - oy, int(xs[-1]) - ox))
    return grids
