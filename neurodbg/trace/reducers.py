"""On-the-fly reducers: fold each chunk a hook sees into a running summary, so
a capture over many tokens (or many generation steps) never materialises.

Reduction runs over the token axis (dim 1) of 3-D and larger tensors, and over
the batch axis of 2-D ones (a plain MLP's samples)."""

from __future__ import annotations

from typing import Literal

import torch

from neurodbg.errors import NeurodbgError

ReduceName = Literal["none", "max", "min", "mean", "sum", "absmax", "last"]
REDUCE_NAMES: tuple[str, ...] = ("none", "max", "min", "mean", "sum", "absmax", "last")


class Capture:
    """Collects what one site produced during one run; `token_axis` is where
    3-D and larger tensors keep their tokens."""

    def __init__(self, reduce: ReduceName = "none", token_axis: int = 1) -> None:
        if reduce not in REDUCE_NAMES:
            raise NeurodbgError(f"unknown reducer {reduce!r}; choose one of {', '.join(REDUCE_NAMES)}")
        self.reduce = reduce
        self.token_axis = token_axis
        self._chunks: list[torch.Tensor] = []
        self._acc: torch.Tensor | None = None
        self._count = 0

    def _axis(self, chunk: torch.Tensor) -> int:
        return self.token_axis if chunk.dim() >= 3 else 0

    def reset(self) -> None:
        self._chunks.clear()
        self._acc = None
        self._count = 0

    def update(self, chunk: torch.Tensor) -> None:
        chunk = chunk.detach()
        if self.reduce == "none":
            self._chunks.append(chunk)
            return
        axis = self._axis(chunk)
        if self.reduce == "last":
            self._acc = chunk.select(axis, chunk.shape[axis] - 1)
            return
        if self.reduce == "max":
            part = chunk.amax(axis)
        elif self.reduce == "min":
            part = chunk.amin(axis)
        elif self.reduce == "absmax":
            part = chunk.abs().amax(axis)
        else:  # sum and mean accumulate in float32 at least, to keep long runs accurate
            part = chunk.sum(axis, dtype=torch.promote_types(chunk.dtype, torch.float32))
        self._count += chunk.shape[axis]
        if self._acc is None:
            self._acc = part
        elif self.reduce in ("max", "absmax"):
            self._acc = torch.maximum(self._acc, part)
        elif self.reduce == "min":
            self._acc = torch.minimum(self._acc, part)
        else:
            self._acc = self._acc + part

    @property
    def empty(self) -> bool:
        return not self._chunks and self._acc is None

    def result(self) -> torch.Tensor:
        if self.reduce == "none":
            if len(self._chunks) == 1:
                return self._chunks[0]
            return torch.cat(self._chunks, dim=self._axis(self._chunks[0]))
        assert self._acc is not None
        if self.reduce == "mean":
            return self._acc / self._count
        return self._acc
