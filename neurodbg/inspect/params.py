"""Exact parameter counts from a config.json alone: the architecture is built by
transformers on the meta device (no memory, no weights) and its parameters are
counted, shared (tied) tensors once."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neurodbg.errors import ConfigError
from neurodbg.inspect.moe import MoeLayer, active_params, moe_layers


@dataclass
class ParamCount:
    total: int
    trainable: int
    by_group: dict[str, int] = field(default_factory=dict)   # top-level children
    tied: bool = False
    active: int | None = None                                 # per token (MoE); None: all of them
    moe: list[MoeLayer] = field(default_factory=list)

    @property
    def active_params(self) -> int:
        return self.total if self.active is None else self.active

    def to_dict(self) -> dict[str, Any]:
        out = {"total_params": self.total, "active_params": self.active_params, "trainable_params": self.trainable,
               "by_group": self.by_group, "tied_embeddings": self.tied}
        if self.moe:
            first = self.moe[0]
            out["moe"] = {"layers": len(self.moe), "experts": first.experts, "top_k": first.top_k,
                          "expert_params": sum(layer.expert_params for layer in self.moe)}
        return out


def count_module(module: nn.Module, config: Any = None) -> ParamCount:
    params = list(module.parameters())  # parameters() yields a shared tensor once
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    by_group: dict[str, int] = {}
    seen: set[int] = set()
    for name, p in module.named_parameters(remove_duplicate=True):
        if id(p) in seen:
            continue
        seen.add(id(p))
        group = ".".join(name.split(".")[:2]) if name.count(".") >= 2 else name.split(".")[0]
        by_group[group] = by_group.get(group, 0) + p.numel()
    tied = len({id(p) for _, p in module.named_parameters(remove_duplicate=False)}) < \
        sum(1 for _ in module.named_parameters(remove_duplicate=False))
    layers = moe_layers(module, config)
    return ParamCount(total, trainable, by_group, tied, active_params(total, layers) if layers else None, layers)


def load_config(path: str | Path) -> Any:
    """A transformers config from a config.json file or a directory holding one."""
    from transformers import AutoConfig

    path = Path(path).expanduser()
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"no config file at {file}")
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise ConfigError(f"{file} has no 'model_type'; it is not a Hugging Face config")
    model_type = raw.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **raw)
    except (ValueError, KeyError, TypeError) as exc:
        reason = str(exc).splitlines()[0].split(". Should contain")[0][:200]
        raise ConfigError(f"cannot build a config of type {model_type!r}: {reason}") from None


def build_on_meta(config: Any) -> nn.Module:
    """The model a config describes, with meta tensors (nothing allocated)."""
    import transformers

    arch = (getattr(config, "architectures", None) or [None])[0]
    candidates = [getattr(transformers, arch)] if arch and hasattr(transformers, arch) else []
    candidates += [transformers.AutoModelForCausalLM, transformers.AutoModel]
    errors = []
    with torch.device("meta"):
        for cls in candidates:
            try:
                if hasattr(cls, "from_config"):
                    return cls.from_config(config)
                return cls(config)
            except (ValueError, KeyError, TypeError) as exc:
                errors.append(str(exc).splitlines()[0])
    raise ConfigError(f"transformers cannot build model type {config.model_type!r}: {errors[-1]}")


def count_from_config(path: str | Path) -> ParamCount:
    return count_module(build_on_meta(load_config(path)))
