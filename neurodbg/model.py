"""`Model`: one loaded network with its tokenizer, its canonical sites, and the
trace entry point. It wraps the real module and never re-implements it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from neurodbg.errors import PromptError
from neurodbg.sites.adapter import BoundAdapter, adapter_for
from neurodbg.sites.resolve import SiteResolver
from neurodbg.sites.site import Site
from neurodbg.sites.structural import StructuralAdapter
from neurodbg.trace.interventions import Intervention
from neurodbg.trace.reducers import ReduceName
from neurodbg.trace.tracer import Sink, Sources, Trace


class Model:
    def __init__(self, module: nn.Module, tokenizer: Any = None, *, name: str | None = None,
                 source: str | None = None, preprocess: Callable[[Any], torch.Tensor] | None = None,
                 labels: list[str] | None = None) -> None:
        self.module = module
        self.tokenizer = tokenizer
        # vision: a PIL image -> the [C, H, W] tensor the model takes, and the class names of its logits
        self.preprocess = preprocess
        self.labels = labels
        self.name = name or type(module).__name__
        self.source = source or self.name
        self.adapter: BoundAdapter | StructuralAdapter | None = adapter_for(module)
        self._resolver = SiteResolver(module, self.adapter)
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"Model({self.name!r}, family={self.family!r}, layers={self.n_layers})"

    # -- anatomy ------------------------------------------------------------------------------
    @property
    def family(self) -> str | None:
        return self.adapter.family if self.adapter else None

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers if self.adapter else 0

    @property
    def config(self) -> Any:
        return getattr(self.module, "config", None)

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def sites(self) -> list[str]:
        """Canonical site names in model order (empty for an unknown architecture)."""
        return list(self._resolver.canonical)

    def resolve(self, spec: str | Iterable[str]) -> list[Site]:
        """Sites named by a canonical name, raw path (``path:input|output``) or pattern."""
        return self._resolver.resolve(spec)

    def site(self, name: str) -> Site:
        """The one site `name` names (a pattern naming several is an error)."""
        return self._resolver.resolve_single(name)

    # -- text ---------------------------------------------------------------------------------
    @property
    def max_length(self) -> int | None:
        config = self.config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def encode(self, prompt: str, *, chat: bool = False) -> torch.Tensor:
        """Token ids [1, T] for `prompt`; with `chat`, through the model's chat template."""
        if self.tokenizer is None:
            raise PromptError(f"{self.name} has no tokenizer; pass tensors instead of text")
        if not prompt or not prompt.strip():
            raise PromptError("the prompt is empty")
        if chat:
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                     add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)["input_ids"]
        else:
            ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        if ids.shape[1] == 0:
            raise PromptError("the prompt tokenises to nothing")
        limit = self.max_length
        if limit is not None and ids.shape[1] > limit:
            raise PromptError(f"the prompt has {ids.shape[1]} tokens; {self.name} accepts at most {limit}")
        return ids

    def tokens(self, ids: torch.Tensor) -> list[str]:
        """Readable token strings for a 1-D id tensor."""
        assert self.tokenizer is not None
        return [self.tokenizer.decode([int(i)]) for i in ids]

    # -- tracing ------------------------------------------------------------------------------
    def trace(self, capture: str | Iterable[str] = (),
              interventions: Iterable[Intervention | Mapping[str, Any]] = (),
              reduce: ReduceName = "none", sources: Sources | None = None, sink: Sink | None = None,
              stop_early: bool = False) -> Trace:
        """A context manager hooking this model; see `Trace`."""
        return Trace(self, capture=capture, interventions=interventions, reduce=reduce, sources=sources,
                     sink=sink, stop_early=stop_early)

    def fingerprint(self) -> str:
        """sha256 over the name, and every parameter and buffer's name, dtype, shape and bytes."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.name.encode())
            for key, tensor in self.module.state_dict().items():
                t = tensor.detach().cpu().contiguous()
                h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d too
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def run(self, inputs: str | torch.Tensor | Mapping[str, Any], capture: str | Iterable[str] = (),
            interventions: Iterable[Intervention | Mapping[str, Any]] = (), reduce: ReduceName = "none",
            sources: Sources | None = None, **kwargs: Any) -> Trace:
        """One traced forward pass; the returned trace holds `.output` and `.captures`."""
        with self.trace(capture, interventions, reduce, sources) as tr:
            tr.forward(inputs, **kwargs)
        return tr
