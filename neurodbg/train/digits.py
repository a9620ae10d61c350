"""Real training on real data with nothing to download: scikit-learn's digits
(1,797 8x8 images of handwritten digits, inside the scikit-learn wheel) and small
networks to train on them. The README's walkthrough, the tests' induced
pathologies, the watcher benchmark and the Optuna example all use these.

    data = digits_data()
    net = mlp([64, 128, 10])
    result = train(net, torch.optim.Adam(net.parameters(), 1e-3), data, steps=300, run="runs/healthy")"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from neurodbg.train.watch import Watcher


@dataclass(frozen=True)
class Digits:
    x_train: torch.Tensor      # [n, 64] float32, pixel intensities scaled to [0, 1]
    y_train: torch.Tensor      # [n] int64
    x_val: torch.Tensor
    y_val: torch.Tensor


def digits_data(*, val_share: float = 0.2, seed: int = 0, train_samples: int | None = None) -> Digits:
    """A seeded split of scikit-learn's digits; `train_samples` keeps only that many for training."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(y) * val_share)
    val, train_idx = order[:n_val], order[n_val:]
    if train_samples is not None:
        train_idx = train_idx[:train_samples]
    return Digits(x[train_idx], y[train_idx], x[val], y[val])


ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}


def mlp(widths: Sequence[int], activation: str = "relu", *, seed: int = 0) -> nn.Sequential:
    """Linear layers of the given widths (input first, classes last) with `activation` between them."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy)"""
    was = model.training
    model.eval()
    try:
        logits = model(x)
        return float(F.cross_entropy(logits, y)), float((logits.argmax(-1) == y).float().mean())
    finally:
        model.train(was)


@dataclass
class TrainResult:
    steps: int
    losses: list[float]
    val_loss: float
    val_acc: float
    stopped: str | None = None


def batches(data: Digits, batch_size: int, seed: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches, epoch after epoch, forever (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = order[start:start + batch_size]
            yield data.x_train[idx], data.y_train[idx]


def train(model: nn.Module, optimizer: torch.optim.Optimizer, data: Digits, *, steps: int, batch_size: int = 64,
          seed: int = 0, run: str | Path | None = None, every: int = 1, val_every: int = 25,
          watch_options: dict[str, Any] | None = None,
          extra_loss: Callable[[], torch.Tensor | None] | None = None) -> TrainResult:
    """A plain training loop (cross-entropy, plus `extra_loss()` after each forward when given: a
    load-balancing loss), watched into `run` when given: the loss is logged before the update,
    validation loss and accuracy every `val_every` steps and at the end."""
    watcher = Watcher(model, optimizer, run=run, every=every, **(watch_options or {})) if run is not None else None
    losses: list[float] = []
    model.train()
    if watcher is not None:
        watcher.__enter__()
    try:
        for step, (x, y) in zip(range(steps), batches(data, batch_size, seed), strict=False):
            loss = F.cross_entropy(model(x), y)
            extra = extra_loss() if extra_loss is not None else None
            if extra is not None:
                loss = loss + extra
            if watcher is not None:
                watcher.batch(x, y)
                watcher.log(loss=loss)
            losses.append(float(loss.detach()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if watcher is not None and (step + 1) % val_every == 0:
                val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
                watcher.log(val_loss=val_loss, val_acc=val_acc)
        val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
        if watcher is not None and steps % val_every:
            watcher.log(val_loss=val_loss, val_acc=val_acc)
    except BaseException as exc:
        if watcher is not None:
            watcher.__exit__(type(exc), exc, exc.__traceback__)
        raise
    if watcher is not None:
        watcher.__exit__(None, None, None)
    return TrainResult(len(losses), losses, val_loss, val_acc)
