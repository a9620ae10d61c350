"""Breakpoints for training: conditions checked at the end of every step (before the
optimizer applies it), and what a hit leaves behind.

    break_on=["nonfinite", "grad_norm>100", "loss>10"]

- `nonfinite`: a NaN or infinite loss, activation (any watched site) or gradient;
- `grad_norm>X`: the global gradient norm (all parameters) above X;
- `loss>X`: the training loss above X (checked when the loop logs it).

A hit raises `BreakpointHit` naming the step, the condition and the first module,
in forward order, whose output or gradient went bad, after saving the step's
batch, the model's and the optimizer's state before the step under
`RUN/breaks/step-NNNNNN/`; `neurodbg.replay(RUN, step, model)` runs it again."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurodbg.errors import BreakpointHit, RunError

_THRESHOLD = re.compile(r"^(grad_norm|loss)\s*>\s*([-+0-9.eE]+)$")


@dataclass(frozen=True)
class BreakOn:
    nonfinite: bool = False
    grad_norm: float | None = None
    loss: float | None = None

    @property
    def any(self) -> bool:
        return self.nonfinite or self.grad_norm is not None or self.loss is not None


def parse_break_on(specs: str | Iterable[str] | BreakOn | None) -> BreakOn:
    if specs is None:
        return BreakOn()
    if isinstance(specs, BreakOn):
        return specs
    items = [specs] if isinstance(specs, str) else list(specs)
    nonfinite, grad_norm, loss = False, None, None
    for item in items:
        text = str(item).strip().replace(" ", "")
        if text == "nonfinite":
            nonfinite = True
            continue
        match = _THRESHOLD.match(text)
        try:
            value = float(match[2]) if match else None
        except ValueError:
            value = None
        if match is None or value is None or value != value or value in (float("inf"), float("-inf")):
            raise RunError(f"unknown breakpoint {item!r}; use nonfinite, grad_norm>X or loss>X (X a finite number)")
        if match[1] == "grad_norm":
            grad_norm = value
        else:
            loss = value
    return BreakOn(nonfinite, grad_norm, loss)


@dataclass
class Hit:
    step: int
    reason: str                    # nonfinite_loss | nonfinite_activation | nonfinite_gradient | grad_norm | loss
    module: str | None             # the first module (site or parameter's module) that went bad, in forward order
    detail: str
    state: str = "before the update"
    directory: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        where = f"; the first module with a non-finite output: {self.module}" if self.module and \
            self.reason in ("nonfinite_loss", "nonfinite_activation") else f" in {self.module}" if self.module else ""
        return f"breakpoint at step {self.step}: {self.detail}{where}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def save_snapshot(run_dir: Path, hit: Hit, batch: tuple[tuple[Any, ...], dict[str, Any]] | None,
                  extra: tuple[Any, ...], model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> Path:
    """breaks/step-NNNNNN/: batch.pt, model.pt, optimizer.pt, info.json, written to a staging
    directory and renamed into place (a kill leaves no half snapshot)."""
    final = run_dir / "breaks" / f"step-{hit.step:06d}"
    staging = final.with_name(f".{final.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    args, kwargs = batch if batch is not None else ((), {})
    torch.save({"args": _detached(args), "kwargs": _detached(kwargs), "extra": _detached(extra)},
               staging / "batch.pt")
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, staging / "model.pt")
    if optimizer is not None:
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    hit.directory = str(final.relative_to(run_dir))
    (staging / "info.json").write_text(json.dumps(hit.to_dict(), indent=2, default=str))
    for path in staging.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return final


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


def load_snapshot(run_dir: Path, step: int) -> tuple[Path, dict[str, Any]]:
    directory = run_dir / "breaks" / f"step-{step:06d}"
    info = directory / "info.json"
    if not info.is_file():
        saved = sorted(p.name[5:].lstrip("0") or "0" for p in (run_dir / "breaks").glob("step-*")) \
            if (run_dir / "breaks").is_dir() else []
        raise RunError(f"{run_dir} holds no breakpoint snapshot of step {step}"
                       + (f" (it has steps {', '.join(saved)})" if saved else " (no breakpoint was hit)"))
    return directory, json.loads(info.read_text())


__all__ = ["BreakOn", "BreakpointHit", "Hit", "load_snapshot", "parse_break_on", "save_snapshot"]
