"""Architecture adapters: map canonical site names onto a family's real modules.

An adapter is data: where the layer list lives, where the embedding, final norm
and unembedding live, and which (sub-module, port, element) each per-layer site
reads. Adding an architecture is one small file that calls `register`."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from neurodbg.sites.fused_experts import expert_count, recomputable
from neurodbg.sites.site import Port, Site
from neurodbg.sites.structural import StructuralAdapter, structural_adapter_for

# Per-layer site name -> (path relative to the layer, port, tuple element).
LayerMap = dict[str, tuple[str, Port, int]]

PER_LAYER_ORDER = ("resid_in", "attn.out", "attn.pattern", "mlp.in", "router.logits", "router.weights",
                   "router.experts", "experts", "shared.act", "mlp.act", "mlp.out", "resid_out")
ROUTER_SITES = ("router.logits", "router.weights", "router.experts")


@dataclass(frozen=True)
class Adapter:
    family: str
    model_types: tuple[str, ...]
    layers: str                      # layer ModuleList, relative to the base model
    embed: str                       # token embedding, relative to the base model
    final_norm: str | None           # relative to the base model
    logits: tuple[str, ...]          # candidate unembedding paths, relative to the root
    per_layer: LayerMap = field(default_factory=dict)
    neuron_writer: str = ""          # module reading the neurons (its weight columns are their output directions)
    neuron_note: str = ""
    experts: str = ""                # a fused routed-experts module, relative to the layer: per-expert neuron sites

    def bind(self, model: nn.Module) -> BoundAdapter:
        modules = dict(model.named_modules())
        for path, module in modules.items():
            if (path == self.layers or path.endswith("." + self.layers)) and isinstance(module, nn.ModuleList):
                base = path[: -len(self.layers)].rstrip(".")
                return BoundAdapter(self, model, base, len(module), modules)
        raise ValueError(f"no '{self.layers}' layer list found in {type(model).__name__}")


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


class BoundAdapter:
    """An adapter fixed to one model instance: knows its canonical sites."""

    def __init__(self, adapter: Adapter, model: nn.Module, base: str, n_layers: int,
                 modules: dict[str, nn.Module]) -> None:
        self.adapter = adapter
        self.base = base
        self.n_layers = n_layers
        self._sites = self._build(modules)

    @property
    def family(self) -> str:
        return self.adapter.family

    def _build(self, modules: dict[str, nn.Module]) -> dict[str, Site]:
        a = self.adapter
        sites: dict[str, Site] = {}
        embed = _join(self.base, a.embed)
        if embed in modules:
            sites["embed"] = Site("embed", embed, "output")
        for i in range(self.n_layers):
            layer_path = _join(self.base, a.layers, str(i))
            for short in PER_LAYER_ORDER:
                if short == "experts":
                    sites.update(self._expert_sites(modules, _join(layer_path, a.experts), i) if a.experts else {})
                    continue
                if short not in a.per_layer:
                    continue
                rel, port, index = a.per_layer[short]
                path = _join(layer_path, rel)
                if path not in modules:
                    continue
                name = f"layers.{i}.{short}"
                pattern = short == "attn.pattern"
                router = short in ROUTER_SITES
                # a router's logits are per expert (an expert atlas scans them); its choices are per slot
                choices = short in ("router.weights", "router.experts")
                sites[name] = Site(name, path, port, index, layer=i, editable=not (pattern or router),
                                   scannable=not (pattern or choices), needs_eager_attention=pattern,
                                   token_axis=2 if pattern else 1, flat_tokens=router)
        if a.final_norm and (norm := _join(self.base, a.final_norm)) in modules:
            sites["final_norm"] = Site("final_norm", norm, "output")
        for cand in a.logits:
            if cand in modules:
                sites["logits"] = Site("logits", cand, "output")
                break
        return sites

    @staticmethod
    def _expert_sites(modules: dict[str, nn.Module], path: str, layer: int) -> dict[str, Site]:
        """`layers.{i}.experts.{e}.act`: each routed expert's neurons (fused layouts computed by
        `trace.expert_sites` only)."""
        experts = modules.get(path)
        if experts is None or not recomputable(experts):
            return {}
        names = [f"layers.{layer}.experts.{e}.act" for e in range(expert_count(experts))]
        return {name: Site(name, path, "output", 0, layer=layer, flat_tokens=True, expert=e)
                for e, name in enumerate(names)}

    @property
    def sites(self) -> dict[str, Site]:
        return self._sites

    def layer_path(self, layer: int) -> str:
        return _join(self.base, self.adapter.layers, str(layer))

    def writer_path(self, layer: int) -> str | None:
        """Path of the module whose input is layer `layer`'s neurons (down_proj and kin)."""
        if not self.adapter.neuron_writer:
            return None
        return _join(self.layer_path(layer), self.adapter.neuron_writer)


_REGISTRY: dict[str, Adapter] = {}


def register(adapter: Adapter) -> Adapter:
    _REGISTRY[adapter.family] = adapter
    return adapter


def families() -> dict[str, Adapter]:
    import neurodbg.sites.architectures  # noqa: F401  (registers the built-in families)

    return dict(_REGISTRY)


def adapter_for(model: nn.Module) -> BoundAdapter | StructuralAdapter | None:
    """The bound adapter for a Hugging Face model, a structural one for a recognised vision model,
    or None for an unknown one."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    for adapter in families().values():
        if model_type is not None and model_type in adapter.model_types:
            try:
                return adapter.bind(model)
            except ValueError:
                return None
    return structural_adapter_for(model)


def supported_families_text() -> str:
    return "; ".join(f"{a.family} ({', '.join(a.model_types)})" for a in families().values()) + \
        "; vision: the digits CNN, torchvision ResNet, ConvNeXt and ViT, Hugging Face resnet and convnext"
