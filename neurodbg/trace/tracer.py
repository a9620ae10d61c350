"""The trace: a context manager that hooks the real modules of a model, runs
it once (a forward pass or a generation), captures chosen sites and applies
interventions.

Only the modules behind requested sites get hooks, so unrequested sites cost
nothing. Hooks are removed on exit, also when the run raises. A capture-only
hook returns None, so a trace without interventions leaves every output bit
identical to the plain model's."""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from neurodbg.errors import InterventionError, NeuronIndexError
from neurodbg.sites.site import Site
from neurodbg.trace.edits import absolute_tokens, apply_edit
from neurodbg.trace.interventions import BanExperts, ForceExperts, Intervention, Patch, parse_interventions
from neurodbg.trace.reducers import Capture, ReduceName

RouterEdit = ForceExperts | BanExperts

if TYPE_CHECKING:
    from neurodbg.model import Model

Sources = Mapping[str, Mapping[str, torch.Tensor]]
Sink = Callable[[str, torch.Tensor], None]


class _StopForward(Exception):
    """Raised after the last requested site so the rest of the model is skipped."""


class Trace:
    """Hooks for one run of `model`. Use as ``with model.trace(...) as tr: tr.forward(...)``.

    capture:       site names or patterns to record
    interventions: edits (objects or their JSON dicts) applied during the run
    reduce:        "none" keeps every token; "max", "min", "mean", "sum", "absmax",
                   "last" fold the token axis on the fly
    sources:       captures of other runs for `patch` interventions, by name
    sink:          instead of storing captures, hand each chunk to sink(site_name, tensor)
    stop_early:    skip the rest of the model once the last captured site has run
                   (`output` is then None); for scans that need no logits
    """

    def __init__(self, model: Model, capture: str | Iterable[str] = (),
                 interventions: Iterable[Intervention | Mapping[str, Any]] = (),
                 reduce: ReduceName = "none", sources: Sources | None = None, sink: Sink | None = None,
                 stop_early: bool = False) -> None:
        self.model = model
        self.capture_sites = model.resolve(capture) if capture else []
        self.interventions: list[Intervention] = parse_interventions(
            [iv.model_dump() if hasattr(iv, "model_dump") else iv for iv in interventions])
        self.reduce = reduce
        self.sources = dict(sources or {})
        self._sink = sink
        self._stop_site = self.capture_sites[-1].name if stop_early and self.capture_sites else None
        self._captures = {site.name: Capture(reduce, site.token_axis) for site in self.capture_sites}
        self._edits: dict[str, list[Intervention]] = defaultdict(list)
        self._edit_sites: dict[str, Site] = {}
        self._router_edits: dict[str, list[RouterEdit]] = defaultdict(list)   # router module path -> edits
        self._router_names: dict[str, set[str]] = defaultdict(set)             # ... and the sites naming it
        for iv in self.interventions:
            if isinstance(iv, (ForceExperts, BanExperts)):
                self._add_router_edit(iv)
                continue
            for site in model.resolve(iv.site):
                if not site.editable:
                    raise InterventionError(f"{site.name} can be captured but not edited")
                self._edits[site.name].append(iv)
                self._edit_sites[site.name] = site
            if isinstance(iv, Patch) and iv.source not in self.sources:
                raise InterventionError(f"patch names source {iv.source!r}, but the trace got "
                                        f"{sorted(self.sources) or 'no sources'}")
        self._handles: list[RemovableHandle] = []
        self._restore_attn: str | None = None
        self.prompt_len = 0
        self._batch = 1              # the current forward's batch size (for `Site.flat_tokens`)
        self._generating = False
        self._seen = 0              # tokens consumed by earlier steps of a cached generation
        self._step_offset = 0       # absolute position of the current step's first token
        self._max_position: dict[str, int] = {}
        self._positions_of: dict[str, int] = {}     # spatial positions of a convolution site (its "tokens")
        self.output: Any = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Trace:
        try:
            self._install()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._remove()

    def _add_router_edit(self, iv: RouterEdit) -> None:
        from neurodbg.trace.routing import check_router_edit

        named = dict(self.model.module.named_modules())
        for site in self.model.resolve(iv.site):
            if ".router." not in site.name:
                raise InterventionError(f"{iv.op} changes a mixture of experts' routing: its site is a router "
                                        f"site (layers.{{i}}.router.logits), not {site.name}")
            check_router_edit(iv, named[site.module_path], site.name)
            self._router_edits[site.module_path].append(iv)
            self._router_names[site.module_path].add(site.name)

    def _install(self) -> None:
        module = self.model.module
        sites = {s.name: s for s in self.capture_sites} | self._edit_sites
        if any(s.needs_eager_attention for s in sites.values()):
            self._force_eager_attention(module)
        named = dict(module.named_modules())
        self._handles.append(module.register_forward_pre_hook(self._on_root_start, with_kwargs=True))
        self._handles.append(module.register_forward_hook(self._on_root_end, with_kwargs=True))
        for path, router_edits in self._router_edits.items():    # before captures: they see the new routing
            self._handles.append(named[path].register_forward_hook(
                self._router_hook(router_edits, self._router_names[path])))
        for name, site in sites.items():
            target = named[site.module_path]
            capture = self._captures.get(name)
            edits = self._edits.get(name, [])
            if site.expert is not None:
                self._handles.append(target.register_forward_hook(self._expert_hook(site, capture, edits)))
            elif site.port == "output":
                self._handles.append(target.register_forward_hook(self._output_hook(site, capture, edits)))
            else:
                param = _positional_name(target, site.index)
                self._handles.append(target.register_forward_pre_hook(
                    self._input_hook(site, capture, edits, param), with_kwargs=True))

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._restore_attn is not None:
            self.model.module.set_attn_implementation(self._restore_attn)  # type: ignore[operator]
            self._restore_attn = None

    def _force_eager_attention(self, module: nn.Module) -> None:
        """Attention weights exist only in the eager implementation; switch for this trace."""
        config = getattr(module, "config", None)
        current = getattr(config, "_attn_implementation", None)
        if current not in (None, "eager") and hasattr(module, "set_attn_implementation"):
            module.set_attn_implementation("eager")  # type: ignore[operator]
            self._restore_attn = current

    # -- runs --------------------------------------------------------------------------------
    def forward(self, inputs: str | torch.Tensor | Mapping[str, Any], *, grad: bool = False,
                chat: bool = False, **kwargs: Any) -> Any:
        """Run one forward pass. A string is tokenised; a tensor or a mapping goes to the module."""
        self._start_run(generating=False)
        args, kw = self._prepare(inputs, chat=chat)
        try:
            with torch.set_grad_enabled(grad):
                self.output = self.model.module(*args, **kw, **kwargs)
        except _StopForward:
            self.output = None
        self._check_positions()
        return self.output

    def generate(self, prompt: str | torch.Tensor, *, max_new_tokens: int = 20, chat: bool = False,
                 **kwargs: Any) -> torch.Tensor:
        """Generate with the model's own `generate`; positions keep counting across steps."""
        self._start_run(generating=True)
        ids = self.model.encode(prompt, chat=chat) if isinstance(prompt, str) else prompt
        self.prompt_len = int(ids.shape[1])
        kwargs.setdefault("do_sample", False)
        tok = self.model.tokenizer
        if tok is not None and tok.pad_token_id is not None:
            kwargs.setdefault("pad_token_id", tok.pad_token_id)
        with torch.no_grad():
            self.output = self.model.module.generate(  # type: ignore[operator]
                ids.to(self.model.device), attention_mask=torch.ones_like(ids).to(self.model.device),
                max_new_tokens=max_new_tokens, **kwargs)
        self._generating = False
        self._check_positions()
        assert isinstance(self.output, torch.Tensor)
        return self.output

    def _prepare(self, inputs: str | torch.Tensor | Mapping[str, Any], *, chat: bool) -> tuple[tuple[Any, ...],
                                                                                                dict[str, Any]]:
        if isinstance(inputs, str):
            ids = self.model.encode(inputs, chat=chat).to(self.model.device)
            self.prompt_len = int(ids.shape[1])
            return (), {"input_ids": ids}
        if isinstance(inputs, torch.Tensor):
            self.prompt_len = int(inputs.shape[1]) if inputs.dim() >= 2 else 1
            return (inputs,), {}
        given = inputs.get("input_ids")
        self.prompt_len = int(given.shape[1]) if isinstance(given, torch.Tensor) else 0
        return (), dict(inputs)

    def _start_run(self, *, generating: bool) -> None:
        for cap in self._captures.values():
            cap.reset()
        self._generating = generating
        self._seen = 0
        self._max_position.clear()
        self._positions_of.clear()

    # -- hooks -------------------------------------------------------------------------------
    def _on_root_start(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        given = kwargs.get("input_ids", kwargs.get("inputs_embeds", args[0] if args else None))
        self._batch = int(given.shape[0]) if isinstance(given, torch.Tensor) and given.dim() >= 2 else 1
        if not self._generating:
            # Each plain call of the model is a new run: positions restart, captures too.
            self._start_run(generating=False)
            ids = kwargs.get("input_ids", args[0] if args else None)
            if isinstance(ids, torch.Tensor):
                self.prompt_len = int(ids.shape[1]) if ids.dim() >= 2 else 1
        self._step_offset = self._seen

    def _on_root_end(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if self._generating:
            ids = kwargs.get("input_ids", args[0] if args else None)
            self._seen += self._step_len(ids)

    def _step_len(self, ids: Any) -> int:
        return int(ids.shape[1]) if isinstance(ids, torch.Tensor) and ids.dim() >= 2 else 1

    def _process(self, site: Site, value: torch.Tensor, capture: Capture | None,
                 edits: list[Intervention]) -> torch.Tensor | None:
        """Apply this site's edits, record the result; None when nothing changed."""
        if site.flat_tokens and value.dim() == 2 and value.shape[0] % self._batch == 0:
            new = self._process(replace(site, flat_tokens=False), value.view(self._batch, -1, value.shape[-1]),
                                capture, edits)
            return None if new is None else new.reshape(value.shape)
        if site.channel_axis == 1 and value.dim() == 4:
            edited = self._edit_channels(site, value, edits)
        else:
            if value.dim() >= 3:
                self._max_position[site.name] = self._step_offset + value.shape[site.token_axis] - 1
            prompt_len = self.prompt_len or (value.shape[1] if value.dim() >= 3 else 1)
            edited = value
            for iv in edits:
                source = self.sources[iv.source].get(site.name) if isinstance(iv, Patch) else None
                edited = apply_edit(iv, edited, site_name=site.name, offset=self._step_offset,
                                    prompt_len=prompt_len, source=source)
        if capture is not None:
            if self._sink is not None:
                self._sink(site.name, edited)
            else:
                capture.update(edited)
        if site.name == self._stop_site:
            raise _StopForward
        return edited if edits else None

    def _edit_channels(self, site: Site, value: torch.Tensor, edits: list[Intervention]) -> torch.Tensor:
        """Edits of a convolution output [B, C, H, W]: applied to its [B, H*W, C] view, where the
        channels are the neurons and the spatial positions (row-major) the tokens; read back in
        the module's own layout."""
        b, c, h, w = value.shape
        self._max_position[site.name] = h * w - 1
        self._positions_of[site.name] = h * w
        if not edits:
            return value

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.flatten(2).transpose(1, 2)

        edited = flat(value)
        for iv in edits:
            source = self.sources[iv.source].get(site.name) if isinstance(iv, Patch) else None
            if source is not None and source.dim() == 4:
                source = flat(source)
            edited = apply_edit(iv, edited, site_name=site.name, offset=0, prompt_len=h * w, source=source)
        # back in the module's own memory layout: a channels-last view would send the next layer
        # down another kernel, whose rounding differs
        return torch.empty_like(value).copy_(edited.transpose(1, 2).reshape(b, c, h, w))

    def _router_hook(self, edits: list[RouterEdit], names: set[str]) -> Any:
        from neurodbg.trace.routing import reroute

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            length = int(output[0].shape[0]) // self._batch if isinstance(output, tuple) else 0
            for name in names:                 # for the positions check at the end of the run
                self._max_position[name] = self._step_offset + length - 1
            return reroute(module, output, edits, batch=self._batch, offset=self._step_offset,
                           prompt_len=self.prompt_len or 1)
        return hook

    def _output_hook(self, site: Site, capture: Capture | None, edits: list[Intervention]) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            value = _element(output, site)
            new = self._process(site, value, capture, edits)
            if new is None:
                return None
            if isinstance(output, torch.Tensor):
                return new
            return _replace(output, site.index, new)
        return hook

    def _expert_hook(self, site: Site, capture: Capture | None, edits: list[Intervention]) -> Any:
        """One routed expert's neurons, computed from the fused experts' inputs; an edit adds its effect
        to their output at the expert's tokens (`expert_sites`)."""
        from neurodbg.trace.expert_sites import expert_neurons, with_edited_neurons

        expert = int(site.expert or 0)

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            if not isinstance(output, torch.Tensor) or len(args) < 3:
                raise InterventionError(f"{site.name}: {site.module_path} was not called as fused experts "
                                        f"(hidden states, top-k index, top-k weights)")
            neurons = expert_neurons(module, args, expert)
            new = self._process(site, neurons.dense(int(output.shape[0])), capture, edits)
            return None if new is None else with_edited_neurons(module, output, neurons, expert, new)
        return hook

    def _input_hook(self, site: Site, capture: Capture | None, edits: list[Intervention], param: str | None) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            in_args = site.index < len(args)
            value = args[site.index] if in_args else kwargs.get(param or "")
            if not isinstance(value, torch.Tensor):
                raise InterventionError(f"{site.name}: input {site.index} of {site.module_path} is not a tensor")
            new = self._process(site, value, capture, edits)
            if new is None:
                return None
            if in_args:
                return _replace(args, site.index, new), kwargs
            return args, {**kwargs, str(param): new}
        return hook

    def _check_positions(self) -> None:
        for iv in self.interventions:
            if not isinstance(iv.tokens, list) or not iv.tokens:
                continue
            for site in self.model.resolve(iv.site):
                wanted = absolute_tokens(iv.tokens, self._positions_of.get(site.name, self.prompt_len))
                last = self._max_position.get(site.name)
                if last is not None and (max(wanted) > last or min(wanted) < 0):
                    bad = max(wanted) if max(wanted) > last else min(wanted)
                    raise NeuronIndexError(f"token position {bad} out of range for {site.name}: "
                                           f"the run had positions 0-{last}")

    # -- results -----------------------------------------------------------------------------
    @property
    def captures(self) -> dict[str, torch.Tensor]:
        return {name: cap.result() for name, cap in self._captures.items() if not cap.empty}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._captures:
            raise KeyError(f"{name!r} was not captured; captured: {', '.join(self._captures) or 'nothing'}")
        cap = self._captures[name]
        if cap.empty:
            raise KeyError(f"{name!r} saw no data: did the run reach that module?")
        return cap.result()

    @property
    def logits(self) -> torch.Tensor:
        logits = getattr(self.output, "logits", None)
        if not isinstance(logits, torch.Tensor):
            raise AttributeError("this run's output has no logits")
        return logits


def _element(output: Any, site: Site) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        if site.index != 0:
            raise InterventionError(f"{site.name}: {site.module_path} returns one tensor, not a tuple")
        return output
    value = output[site.index] if isinstance(output, (tuple, list)) else None
    if value is None and site.needs_eager_attention:
        raise InterventionError(f"{site.name}: this attention implementation does not expose weights")
    if not isinstance(value, torch.Tensor):
        raise InterventionError(f"{site.name}: element {site.index} of {site.module_path}'s output is not a tensor")
    return value


def _replace(seq: Any, index: int, new: torch.Tensor) -> Any:
    items = list(seq)
    items[index] = new
    return type(seq)(items) if isinstance(seq, tuple) and type(seq) is tuple else tuple(items)


def _positional_name(module: nn.Module, index: int) -> str | None:
    """Name of forward's `index`-th parameter, for modules called with keywords."""
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return params[index].name if index < len(params) else None
