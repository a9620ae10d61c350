"""Vision transformers, with the language models' site names and the patch tokens
(after the class token) as positions: a neuron is one coordinate of the MLP's
hidden activation, the input of its second linear layer.

Hugging Face ViT and DeiT are keyed on their `model_type`; torchvision's
VisionTransformer, which has no config, is recognised by its layout."""

from __future__ import annotations

from torch import nn

from neurodbg.sites.adapter import Adapter, register
from neurodbg.sites.site import Site
from neurodbg.sites.structural import StructuralAdapter, register_matcher

VIT = register(Adapter(
    family="vit",
    model_types=("vit", "deit"),
    layers="layers",                 # transformers 5 (4.x had encoder.layer)
    embed="embeddings",
    final_norm="layernorm",
    logits=("classifier",),
    per_layer={
        "resid_in": ("", "input", 0),
        "attn.out": ("attention", "output", 0),
        "mlp.in": ("mlp", "input", 0),
        "mlp.act": ("mlp.fc2", "input", 0),
        "mlp.out": ("mlp", "output", 0),
        "resid_out": ("", "output", 0),
    },
    neuron_writer="mlp.fc2",
    neuron_note="input of mlp.fc2: act(fc1(x))",
))

# per-layer site -> (path in an EncoderBlock, port, element); MLPBlock is [Linear, GELU, Dropout, Linear, Dropout]
_TORCHVISION_LAYER = {
    "resid_in": ("", "input", 0),
    "attn.out": ("self_attention", "output", 0),
    "mlp.in": ("mlp", "input", 0),
    "mlp.act": ("mlp.3", "input", 0),
    "mlp.out": ("mlp", "output", 0),
    "resid_out": ("", "output", 0),
}


@register_matcher
def torchvision_vit(module: nn.Module) -> StructuralAdapter | None:
    cls = type(module)
    if cls.__name__ != "VisionTransformer" or not cls.__module__.startswith("torchvision.models"):
        return None
    blocks = list(module.encoder.layers.named_children())      # type: ignore[union-attr]
    sites: dict[str, Site] = {"embed": Site("embed", "conv_proj", "output", channel_axis=1)}
    for i, (child, _) in enumerate(blocks):
        for short, (rel, port, index) in _TORCHVISION_LAYER.items():
            path = f"encoder.layers.{child}" + (f".{rel}" if rel else "")
            name = f"layers.{i}.{short}"
            sites[name] = Site(name, path, port, index, layer=i)   # type: ignore[arg-type]
    sites["final_norm"] = Site("final_norm", "encoder.ln", "output")
    sites["logits"] = Site("logits", "heads", "output")
    return StructuralAdapter("vit", sites, n_layers=len(blocks))
