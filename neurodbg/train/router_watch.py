"""Router health during training: per recorded step and MoE router, how many routed
slots each expert received, the experts' summed softmax probabilities and the summed
routing entropy. The diagnosis turns these into `expert_collapse` and `idle_experts`
findings (`diagnose`), with the thresholds of `analyze.router_health`.

Routers are found without the user naming them: a module with integer `top_k` and
`num_experts` attributes is a router (every top-k router class of transformers' MoE
families has both, and so has `digits_moe.TopKRouter`). Others are named with
`routers={"path.to.gate": top_k}`. A router's output is its logits [..., experts], or
a tuple starting with them whose third element is the chosen experts' indices, as
transformers' routers return (logits, weights, indices); without indices the chosen
experts are the top-k logits, which is how plain top-k routers choose (a router that
biases its choice, like DeepSeek-V3's, should return its indices).

The figures are summed on the model's device while the step runs and moved to the
host once per recorded step, all routers together; like the other hooks, these read
and never change what they see."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from neurodbg.errors import RunError
from neurodbg.model import Model


@dataclass
class RouterFigures:
    """One router over one recorded step."""
    name: str
    experts: int
    top_k: int
    tokens: int
    counts: list[float]       # routed slots per expert
    probs: list[float]        # summed softmax probability per expert
    entropy: float            # summed routing entropy (nats)


@dataclass
class _Tap:
    name: str
    path: str
    module: nn.Module
    top_k: int
    sums: torch.Tensor | None = None      # [2 * experts + 1]: counts, probability sums, entropy sum
    tokens: int = 0


def _router_name(model: Model, path: str) -> str:
    """`layers.{i}.router` where the adapter names the router's sites; the module path elsewhere."""
    for name in model.sites:
        if name.endswith(".router.logits") and model.site(name).module_path == path:
            return name.removesuffix(".logits")
    return path


def find_routers(model: Model, routers: Mapping[str, int] | Iterable[str] | None) -> list[tuple[str, str, nn.Module,
                                                                                               int]]:
    """(name, module path, module, top_k) of each router: those named, or every module that looks like one."""
    modules = dict(model.module.named_modules())
    if routers is None:
        found = [(path, m, m.top_k) for path, m in modules.items()
                 if isinstance(getattr(m, "top_k", None), int) and isinstance(getattr(m, "num_experts", None), int)]
    else:
        spec = dict(routers) if isinstance(routers, Mapping) else {path: None for path in routers}
        found = []
        for path, k in spec.items():
            if path not in modules:
                raise RunError(f"no module {path!r} in {type(model.module).__name__} to watch as a router")
            top_k = k if k is not None else getattr(modules[path], "top_k", None)
            if not isinstance(top_k, int) or top_k < 1:
                raise RunError(f"router {path!r}: give its top_k (routers={{{path!r}: k}}); the module has no "
                               f"top_k attribute")
            found.append((path, modules[path], top_k))
    return [(_router_name(model, path), path, module, k) for path, module, k in found]


class RouterWatch:
    def __init__(self, model: Model, routers: Mapping[str, int] | Iterable[str] | None) -> None:
        self.taps = [_Tap(name, path, module, k) for name, path, module, k in find_routers(model, routers)]
        self._handles: list[RemovableHandle] = []

    @property
    def names(self) -> list[str]:
        return [tap.name for tap in self.taps]

    @property
    def blocks(self) -> list[str]:
        """The modules holding each router and its experts (the router's parent)."""
        return sorted({tap.path.rsplit(".", 1)[0] for tap in self.taps if "." in tap.path})

    def arm(self) -> None:
        if self.taps and not self._handles:
            self._handles = [tap.module.register_forward_hook(self._hook(tap)) for tap in self.taps]

    def disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, tap: _Tap) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if torch.is_grad_enabled():
                self._add(tap, output)
        return hook

    @staticmethod
    @torch.no_grad()
    def _add(tap: _Tap, output: Any) -> None:
        logits = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(logits, torch.Tensor) or logits.dim() < 1:
            return
        experts = int(logits.shape[-1])
        logits = logits.detach().reshape(-1, experts).float()
        chosen = output[2] if isinstance(output, (tuple, list)) and len(output) > 2 else None
        if not (isinstance(chosen, torch.Tensor) and not chosen.is_floating_point()):
            chosen = logits.topk(min(tap.top_k, experts), dim=-1).indices
        probs = torch.softmax(logits, dim=-1)
        counts = torch.bincount(chosen.detach().reshape(-1).long(), minlength=experts)[:experts]
        entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum()
        sums = torch.cat([counts.to(probs.dtype), probs.sum(0), entropy.reshape(1)])
        tap.sums = sums if tap.sums is None or tap.sums.shape != sums.shape else tap.sums + sums
        tap.tokens += logits.shape[0]

    def take(self) -> list[RouterFigures]:
        """The step's figures of every router that ran (one host transfer), and a fresh start."""
        ran = [tap for tap in self.taps if tap.sums is not None]
        if not ran:
            return []
        parts = [tap.sums.double() for tap in ran if tap.sums is not None]
        try:
            values = torch.cat(parts).tolist()
        except RuntimeError:        # routers on several devices
            values = torch.cat([part.cpu() for part in parts]).tolist()
        out: list[RouterFigures] = []
        offset = 0
        for tap in ran:
            e = (len(tap.sums) - 1) // 2 if tap.sums is not None else 0
            chunk = values[offset:offset + 2 * e + 1]
            offset += 2 * e + 1
            out.append(RouterFigures(tap.name, e, tap.top_k, tap.tokens, chunk[:e], chunk[e:2 * e], chunk[2 * e]))
            tap.sums, tap.tokens = None, 0
        return out
