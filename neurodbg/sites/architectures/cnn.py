"""Convolutional classifiers. A channel of a convolution's output is a neuron, its
feature map that neuron's per-position activation (as tokens are for text). The
canonical sites follow a ResNet's layout in every family:

    stem                      the input stage (convolution, and pooling where the family has it)
    stages.{s}.blocks.{b}.out the output of block b of stage s
    pool                      the pooled features the classifier reads
    logits                    the class scores

Families: the embedded `digits` CNN, torchvision's ResNet, ConvNeXt, VGG,
MobileNet (v2, v3) and EfficientNet, and Hugging Face's ResNet and ConvNeXt
(`model_type` resnet, convnext). Where a family has no stages of its own they
are its runs of blocks at one resolution: VGG's convolutions between two
poolings (a block is a convolution and its ReLU), MobileNet's inverted residuals
from one strided block to the next. A family's last 1x1 convolution before the
pooling (MobileNet, EfficientNet) has no canonical name; its raw path reads it."""

from __future__ import annotations

from torch import nn

from neurodbg.sites.structural import StructuralAdapter, register_matcher, site_map


def _blocks(modules: dict[str, nn.Module], stages: list[str], inner: str = "") -> list[tuple[str, str]]:
    """stages.{s}.blocks.{b}.out for each child block of each stage path."""
    out = []
    for s, stage in enumerate(stages):
        container = modules[f"{stage}.{inner}" if inner else stage]
        for b, (child, _) in enumerate(container.named_children()):
            out.append((f"stages.{s}.blocks.{b}.out", f"{stage}.{inner + '.' if inner else ''}{child}"))
    return out


def _adapter(family: str, stem: str, blocks: list[tuple[str, str]], pool: str | None, logits: str | None
             ) -> StructuralAdapter:
    entries = [("stem", stem), *blocks]
    entries += [(name, path) for name, path in (("pool", pool), ("logits", logits)) if path]
    return StructuralAdapter(family, site_map(entries))


@register_matcher
def digits_cnn(module: nn.Module) -> StructuralAdapter | None:
    from neurodbg.vision.digits_cnn import DigitsCNN

    if not isinstance(module, DigitsCNN):
        return None
    modules = dict(module.named_modules())
    stages = [f"stages.{s}" for s in range(len(module.stages))]
    return _adapter("digits-cnn", "stem", _blocks(modules, stages, "blocks"), "pool", "logits")


def _is_torchvision(module: nn.Module, class_name: str) -> bool:
    cls = type(module)
    return cls.__name__ == class_name and cls.__module__.startswith("torchvision.models")


@register_matcher
def torchvision_resnet(module: nn.Module) -> StructuralAdapter | None:
    if not _is_torchvision(module, "ResNet"):
        return None
    modules = dict(module.named_modules())
    stages = [name for name in ("layer1", "layer2", "layer3", "layer4") if name in modules]
    return _adapter("resnet", "maxpool", _blocks(modules, stages), "avgpool", "fc")


@register_matcher
def torchvision_convnext(module: nn.Module) -> StructuralAdapter | None:
    if not _is_torchvision(module, "ConvNeXt"):
        return None
    modules = dict(module.named_modules())
    # features: the stem, then stages (runs of CNBlocks) and the downsampling layers between them
    stages = [f"features.{i}" for i, child in enumerate(module.features)    # type: ignore[arg-type]
              if i > 0 and any(type(c).__name__ == "CNBlock" for c in child.children())]
    return _adapter("convnext", "features.0", _blocks(modules, stages), "avgpool", "classifier")


def _strided(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())


@register_matcher
def torchvision_vgg(module: nn.Module) -> StructuralAdapter | None:
    if not _is_torchvision(module, "VGG"):
        return None
    stages: list[list[str]] = [[]]
    for i, child in enumerate(module.features):                # type: ignore[arg-type]
        if isinstance(child, nn.MaxPool2d):
            stages.append([])
        elif isinstance(child, nn.ReLU):
            stages[-1].append(f"features.{i}")
    blocks = [(f"stages.{s}.blocks.{b}.out", path) for s, paths in enumerate(p for p in stages if p)
              for b, path in enumerate(paths)]
    return StructuralAdapter("vgg", site_map([*blocks, ("pool", "avgpool"), ("logits", "classifier")]))


@register_matcher
def torchvision_mobile(module: nn.Module) -> StructuralAdapter | None:
    """MobileNet v2/v3 (inverted residuals, staged by stride) and EfficientNet (staged already)."""
    kind = type(module).__name__
    if kind not in ("MobileNetV2", "MobileNetV3", "EfficientNet") or not _is_torchvision(module, kind):
        return None
    features = list(module.features)                            # type: ignore[arg-type]
    blocks: list[tuple[str, str]] = []
    if kind == "EfficientNet":
        for s, stage in enumerate(features[1:-1]):
            blocks += [(f"stages.{s}.blocks.{b}.out", f"features.{s + 1}.{b}") for b in range(len(stage))]
    else:
        s, b = -1, 0
        for i, block in enumerate(features[1:-1], start=1):
            if s < 0 or _strided(block):
                s, b = s + 1, 0
            blocks.append((f"stages.{s}.blocks.{b}.out", f"features.{i}"))
            b += 1
    modules = dict(module.named_modules())
    family = "efficientnet" if kind == "EfficientNet" else "mobilenet"
    return _adapter(family, "features.0", blocks, "avgpool" if "avgpool" in modules else None, "classifier")


def _join(base: str, path: str) -> str:
    return f"{base}.{path}" if base else path


# Hugging Face CNNs: model_type -> (stem, pooled features), relative to the base model
_HF_CNNS = {"resnet": ("embedder", "pooler"), "convnext": ("embeddings", "layernorm")}


@register_matcher
def hf_cnn(module: nn.Module) -> StructuralAdapter | None:
    model_type = getattr(getattr(module, "config", None), "model_type", None)
    if model_type not in _HF_CNNS:
        return None
    stem, pool = _HF_CNNS[model_type]
    modules = dict(module.named_modules())
    base = model_type if f"{model_type}.encoder" in modules else ""      # a task head wraps the base model
    stages = [_join(base, f"encoder.stages.{s}") for s in range(len(modules[_join(base, "encoder.stages")]))]
    return _adapter(model_type, _join(base, stem), _blocks(modules, stages, "layers"),
                    _join(base, pool) if _join(base, pool) in modules else None,
                    "classifier" if "classifier" in modules else None)
