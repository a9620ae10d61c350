"""Activation statistics of one watched site over one training step: the sum and
the sum of squares of its values (mean and standard deviation follow), each
unit's largest value (a unit whose largest value is not positive never fired in
the batch; the watcher counts a unit dead when it fired in none of its last
`dead_window` recorded steps), and for sigmoid/tanh sites how many values are saturated.
Non-finite values show in the sums as NaN or infinity; only then, at the end of
the step, are they counted (the rare path keeps the step's tensors until the step
ends, which they outlive by the backward pass only). Several forward calls in one
step (gradient accumulation) add up.

Two paths compute the same figures. On a CPU, NumPy on a zero-copy view: the sum of
squares as a BLAS dot product, and the sum either as a dot product with ones plus
the units' maxima or, for ReLU outputs (never negative), as one matrix-vector
product giving each unit's column sum (positive iff it fired) — a few BLAS calls
where the same torch operations cost ~3x more with their dispatch. On any other
device, torch operations that stay on the device with no host sync until the step
ends (`read_step` moves every site's figures at once).

A unit is the last axis of the output (features, hidden size), or the channel axis
of a 4-D convolution output [batch, channels, height, width]."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

Kind = Literal["rectifier", "sigmoid", "tanh", "other"]
SATURATION = 0.02          # sigmoid below 0.02 or above 0.98, tanh beyond ±0.98: gradient < ~4 % of its peak

RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
              nn.Mish, nn.Hardswish, nn.Softplus)
SQUASHERS = (nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.Hardtanh)
_ONES: dict[tuple[int, str], np.ndarray] = {}


def kind_of(module: nn.Module, site_name: str) -> Kind:
    """What "dead" and "saturated" mean for this site's values."""
    if isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)):
        return "sigmoid"
    if isinstance(module, (nn.Tanh, nn.Hardtanh)):
        return "tanh"
    if isinstance(module, RECTIFIERS) or site_name.endswith("mlp.act"):
        return "rectifier"
    return "other"


def _units_last(x: torch.Tensor) -> torch.Tensor:
    """[rows, units] with the units last (a conv output's channels moved there)."""
    if x.dim() == 4:
        x = x.transpose(1, -1)
    return x.reshape(-1, x.shape[-1]) if x.dim() >= 2 else x.reshape(1, -1)


def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    key = (n, dtype.str)
    ones = _ONES.get(key)
    if ones is None:
        if len(_ONES) > 64:
            _ONES.clear()
        ones = _ONES[key] = np.ones(n, dtype=dtype)
    return ones


NONNEGATIVE = (nn.ReLU, nn.ReLU6)      # outputs >= 0: a unit fired iff its column sum is positive


class StepSums:
    """One site within one step. `nonnegative`: the site's values are never negative (ReLU), so on
    a CPU one matrix-vector product gives both the sum and which units fired."""

    def __init__(self, kind: Kind, nonnegative: bool = False) -> None:
        self.kind = kind
        self.nonnegative = nonnegative
        self.reset()

    def reset(self) -> None:
        # (sum, sum of squares) per forward call; on the NumPy path of a ReLU site the "sum" is the
        # units' column sums (an array, summed when the step is read)
        self.calls: list[tuple[float | np.ndarray | torch.Tensor, float | torch.Tensor]] = []
        self.count = 0
        self.peak: np.ndarray | torch.Tensor | None = None      # each unit's largest value (or column sum)
        self.saturated: float | torch.Tensor | None = None
        self.values: list[torch.Tensor] = []
        self._units = 0

    def fresh(self) -> StepSums:
        """An empty accumulator for the same site (this one may still be read elsewhere)."""
        return StepSums(self.kind, self.nonnegative)

    @property
    def on_host(self) -> bool:
        """Whether every figure is already on the host (the NumPy path): reading them needs no sync."""
        return not any(isinstance(q, torch.Tensor) for _, q in self.calls)

    def add(self, value: torch.Tensor) -> None:
        x = value.detach()
        try:                       # a CPU float32/float64 tensor: a zero-copy NumPy view
            a = x.numpy()
        except (RuntimeError, TypeError):
            a = None
        if a is not None and (a.dtype == np.float32 or a.dtype == np.float64):
            if a.ndim != 2:
                if a.ndim == 4:                                      # conv: channels are the units
                    a = np.moveaxis(a, 1, -1)
                a = a.reshape(-1, a.shape[-1]) if a.ndim >= 2 else a.reshape(1, -1)
            self.values.append(x)
            self.count += a.size
            self._units = a.shape[1]
            self._add_numpy(a)
            return
        t = _units_last(x)
        self.values.append(t)
        self.count += t.numel()
        self._units = int(t.shape[-1])
        self._add_torch(t)

    def _add_numpy(self, a: np.ndarray) -> None:
        flat = a.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):     # overflow is found and redone in `exact`
            squares = float(np.dot(flat, flat))
            if self.nonnegative and self.kind == "rectifier":
                columns = np.dot(_ones(a.shape[0], a.dtype), a)      # per-unit sums: > 0 iff the unit fired
                self.calls.append((columns, squares))
                self.peak = columns if self.peak is None else np.maximum(self.peak, columns)
                return
            self.calls.append((float(np.dot(flat, _ones(flat.size, flat.dtype))), squares))
        if self.kind == "rectifier":
            peak = a.max(0)
            self.peak = peak if self.peak is None else np.maximum(self.peak, peak)
        elif self.kind != "other":
            sat = ((a < SATURATION) | (a > 1 - SATURATION)) if self.kind == "sigmoid" else (np.abs(a) > 1 - SATURATION)
            count = float(np.count_nonzero(sat))
            self.saturated = count + (self.saturated or 0.0)

    def _add_torch(self, x: torch.Tensor) -> None:
        flat = x.reshape(-1).float()
        self.calls.append((flat.sum(), torch.dot(flat, flat)))
        if self.kind == "rectifier":
            peak = x.amax(0)
            self.peak = peak if self.peak is None else torch.maximum(self.peak, peak)    # type: ignore[arg-type]
        if self.kind in ("sigmoid", "tanh"):
            sat = ((x < SATURATION) | (x > 1 - SATURATION)) if self.kind == "sigmoid" else (x.abs() > 1 - SATURATION)
            count = sat.sum()
            self.saturated = count if self.saturated is None else self.saturated + count

    @property
    def units(self) -> int:
        return self._units

    def squares_finite(self) -> bool:
        """On the host path: whether the step's sum of squares is finite (else some value is NaN or
        infinite, or huge enough to overflow it: `nonfinite` and `exact` tell which)."""
        return all(math.isfinite(q) for _, q in self.calls)

    def nonfinite(self) -> int:
        """How many values were NaN or infinite (asked only when the sums are not finite)."""
        return int(sum(int((~torch.isfinite(v)).sum()) for v in self.values))

    def exact(self) -> tuple[float, float]:
        """(sum, sum of squares) in float64 from the step's values: for the rare step whose float32
        sums overflowed although every value is finite."""
        total = sum(float(v.double().sum()) for v in self.values)
        squares = sum(float(v.double().square().sum()) for v in self.values)
        return total, squares


def read_step(sites: Sequence[StepSums]) -> list[tuple[float, float, int, int, float | None]]:
    """Every site's (sum, sum of squares, values, fired units, saturated values) of the step. Device
    tensors are moved to the host together (one transfer for all sites' sums, one for their units'
    maxima, one for saturation counts); the sums are combined in float64 on the host."""
    device_sums = [t for one in sites for call in one.calls for t in call if isinstance(t, torch.Tensor)]
    moved = iter(torch.stack(device_sums).tolist() if device_sums else [])
    device_peaks = [one.peak for one in sites if isinstance(one.peak, torch.Tensor)]
    fired_on_device = iter(torch.stack([(p > 0).sum() for p in device_peaks]).tolist() if device_peaks else [])
    device_sat = [one.saturated for one in sites if isinstance(one.saturated, torch.Tensor)]
    sat_moved = iter(torch.stack(device_sat).tolist() if device_sat else [])
    out: list[tuple[float, float, int, int, float | None]] = []
    for one in sites:
        total = squares = 0.0
        for s, q in one.calls:
            total += next(moved) if isinstance(s, torch.Tensor) else float(s.sum()) if isinstance(s, np.ndarray) else s
            squares += next(moved) if isinstance(q, torch.Tensor) else q
        if isinstance(one.peak, torch.Tensor):
            fired = int(next(fired_on_device))
        else:
            fired = int(np.count_nonzero(one.peak > 0)) if one.peak is not None else 0
        saturated: float | None = None
        if isinstance(one.saturated, torch.Tensor):
            saturated = float(next(sat_moved))
        elif one.saturated is not None:
            saturated = float(one.saturated)
        out.append((total, squares, one.count, fired, saturated))
    return out


def summarise(total: float, squares: float, count: int, fired: int, saturated: float | None, units: int,
              kind: Kind) -> tuple[float | None, float | None, float | None, float | None]:
    """(mean, std, dead share, saturated share) of a step; a non-finite mean or std is None."""
    mean = total / count if count else math.nan
    std = math.sqrt(max(squares / count - mean * mean, 0.0)) if count and math.isfinite(mean) else math.nan
    dead = 1.0 - fired / units if kind == "rectifier" and units else None
    sat = saturated / count if saturated is not None and count else None
    return (mean if math.isfinite(mean) else None), (std if math.isfinite(std) else None), dead, sat
