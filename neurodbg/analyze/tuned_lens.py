"""The tuned lens (Belrose et al. 2023): before a layer's residual stream is read through the
final norm and the unembedding, an affine translator trained for that layer maps it to what
the last layer would hold. Each translator is residual, h + h·Aᵀ + b, with A and b starting
at zero, so an untrained lens is the logit lens bit for bit; the last layer's translator stays
zero, so there the tuned lens is the model's own logits.

A lens is one safetensors file bound to the model's fingerprint like an atlas; by default it
lives in neurodbg's cache under that fingerprint (`default_path`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurodbg import paths
from neurodbg.errors import TunedLensError, TunedLensMismatchError
from neurodbg.model import Model

FORMAT = 1


@dataclass
class TunedLens:
    weights: torch.Tensor            # [layers, d, d]: A of each translator (float32)
    biases: torch.Tensor             # [layers, d]
    model_name: str
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)   # how it was trained and how it scored

    @property
    def n_layers(self) -> int:
        return int(self.weights.shape[0])

    @classmethod
    def identity(cls, model: Model) -> TunedLens:
        """The untrained lens: every translator zero, i.e. the logit lens."""
        d = hidden_size(model)
        return cls(torch.zeros(model.n_layers, d, d), torch.zeros(model.n_layers, d), model.name,
                   model.fingerprint())

    def translate(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """h + h·Aᵀ + b in float32, returned in h's dtype."""
        x = h.float()
        a = self.weights[layer].to(x.device)
        b = self.biases[layer].to(x.device)
        return (x + (x @ a.T + b)).to(h.dtype)

    def check(self, model: Model) -> None:
        if self.fingerprint != model.fingerprint():
            raise TunedLensMismatchError(
                f"this tuned lens was trained for another model: {self.model_name} ({self.fingerprint[:12]}), "
                f"not {model.name} ({model.fingerprint()[:12]}); train one with `neurodbg train-lens`")
        if self.n_layers != model.n_layers or self.weights.shape[1] != hidden_size(model):
            raise TunedLensMismatchError(f"this tuned lens has {self.n_layers} layers of width "
                                         f"{self.weights.shape[1]}; {model.name} does not")

    def save(self, path: str | Path) -> Path:
        """Write atomically (a temporary file renamed into place): a kill leaves the old file or the new one."""
        from safetensors.torch import save

        from neurodbg.atlas.export import atomic_file

        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": str(FORMAT), "model_name": self.model_name, "fingerprint": self.fingerprint,
                "info": json.dumps(self.info)}
        data = save({"weights": self.weights.contiguous(), "biases": self.biases.contiguous()}, metadata=meta)
        with atomic_file(target, binary=True) as (_, handle):
            handle.write(data)
        return target


def hidden_size(model: Model) -> int:
    config = getattr(model.module, "config", None)
    size = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    if not isinstance(size, int):
        raise TunedLensError(f"{model.name} has no hidden size in its config: a tuned lens needs one")
    return size


def default_path(model: Model) -> Path:
    """Where `train-lens` keeps a model's lens when no file is named: the cache, by fingerprint."""
    return paths.home() / "lenses" / f"{model.fingerprint()[:24]}.safetensors"


def load_tuned_lens(path: str | Path, model: Model | None = None) -> TunedLens:
    """Read a lens file; with `model`, refuse it unless it was trained for exactly that model."""
    from safetensors import SafetensorError, safe_open

    source = Path(path).expanduser()
    if not source.is_file():
        raise TunedLensError(f"no tuned lens at {source}")
    try:
        with safe_open(str(source), framework="pt") as f:
            meta = f.metadata() or {}
            weights, biases = f.get_tensor("weights"), f.get_tensor("biases")
        info = json.loads(meta.get("info", "{}"))
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise TunedLensError(f"{source} is not a readable tuned lens: {str(exc).splitlines()[0]}") from None
    if meta.get("format") != str(FORMAT) or "fingerprint" not in meta:
        raise TunedLensError(f"{source} is not a neurodbg tuned lens (format {meta.get('format')!r})")
    if weights.ndim != 3 or biases.shape != weights.shape[:2] or weights.shape[1] != weights.shape[2]:
        raise TunedLensError(f"{source} holds translators of inconsistent shapes {tuple(weights.shape)} "
                             f"and {tuple(biases.shape)}")
    lens = TunedLens(weights.float(), biases.float(), meta.get("model_name", "?"), meta["fingerprint"], info)
    if model is not None:
        lens.check(model)
    return lens


def find_tuned_lens(model: Model, path: str | Path | None = None) -> TunedLens | None:
    """The lens file at `path` (refused unless it is `model`'s), else the model's own from the
    cache when `train-lens` made one, else None."""
    if path is not None:
        return load_tuned_lens(path, model)
    own = default_path(model)
    return load_tuned_lens(own, model) if own.is_file() else None


def lens_for(model: Model, path: str | Path | None = None) -> TunedLens:
    """The tuned lens at `path`, or the one trained for `model` in the cache."""
    if path is None:
        path = default_path(model)
        if not path.is_file():
            raise TunedLensError(f"no tuned lens has been trained for {model.name} on this machine; train one "
                                 f"with `neurodbg train-lens --model {model.name}` or pass a lens file")
    return load_tuned_lens(path, model)
