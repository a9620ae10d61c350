"""`neurodbg.replay`: run a breakpoint's step again, exactly, under a trace.

    hit = ...                                           # a BreakpointHit, or read the run's breaks
    r = neurodbg.replay("runs/mlp", hit.step, model, loss_fn=lambda out, batch: F.cross_entropy(out, y))
    r.first_nonfinite                                    # the first watched site whose output is not finite
    r.captures["fc2:output"]                             # every site's value, as the step computed it
    r.model                                              # a neurodbg.Model in the state before the step

The snapshot holds the batch and the model's (and optimizer's) state before the
step, so the forward pass is the step's own (in the model's current train/eval
mode: a run with dropout draws new masks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neurodbg.errors import RunError
from neurodbg.model import Model
from neurodbg.train.breakpoints import load_snapshot
from neurodbg.train.run_store import RunStore
from neurodbg.train.watch import default_sites


@dataclass
class Replay:
    step: int
    info: dict[str, Any]
    model: Model
    batch: dict[str, Any]
    output: Any
    loss: torch.Tensor | None
    captures: dict[str, torch.Tensor] = field(default_factory=dict)
    grads: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def first_nonfinite(self) -> str | None:
        """The first captured site, in forward order, whose value holds a NaN or an infinity."""
        for name, value in self.captures.items():
            if not bool(torch.isfinite(value).all()):
                return name
        return None

    @property
    def first_nonfinite_gradient(self) -> str | None:
        for name, grad in self.grads.items():
            if not bool(torch.isfinite(grad).all()):
                return name
        return None


def replay(run: str | Path, step: int, model: nn.Module | Model, *, loss_fn: Callable[[Any, dict[str, Any]], Any]
           | None = None, sites: Iterable[str] | None = None, optimizer: torch.optim.Optimizer | None = None
           ) -> Replay:
    """Load the step's snapshot into `model` (the same architecture as the run's) and run it again,
    capturing `sites` (default: those the watcher uses); with `loss_fn(output, batch)` also the
    loss and every parameter's gradient (`batch["extra"]` holds what the loop gave `w.batch()`,
    e.g. the targets). `optimizer`, when given, gets the optimizer state too."""
    store = RunStore.open(run)
    try:
        directory, info = load_snapshot(store.directory, step)
    finally:
        store.close()
    wrapped = model if isinstance(model, Model) else Model(model)
    try:
        state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
        wrapped.module.load_state_dict(state)
        batch = torch.load(directory / "batch.pt", map_location="cpu", weights_only=False)
    except (RuntimeError, OSError, KeyError) as exc:
        raise RunError(f"cannot load the snapshot of step {step} into {type(wrapped.module).__name__} "
                       f"({str(exc).splitlines()[0][:200]}): is it the run's architecture?") from None
    if optimizer is not None and (directory / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=False))
    device = wrapped.device
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in batch["args"])
    kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch["kwargs"].items()}
    extra = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in batch.get("extra", ()))
    names = [s.name for s in wrapped.resolve(list(sites) if sites is not None else default_sites(wrapped))]
    wrapped.module.zero_grad(set_to_none=True)
    with wrapped.trace(capture=names) as tr, torch.set_grad_enabled(loss_fn is not None):
        output = wrapped.module(*args, **kwargs)
        loss = loss_fn(output, {"args": args, "kwargs": kwargs, "extra": extra}) if loss_fn is not None else None
        if loss is not None:
            loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in wrapped.module.named_parameters() if p.grad is not None}
    captures = {name: value.detach() for name, value in tr.captures.items()}
    return Replay(step, info, wrapped, {"args": args, "kwargs": kwargs, "extra": extra}, output, loss, captures,
                  grads)
