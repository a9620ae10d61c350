"""Load any model source into a `Model`: an embedded catalogue name, a Hugging
Face model directory, a GGUF file, a hub id (only when online), or an nn.Module."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neurodbg.errors import ModelLoadError
from neurodbg.model import Model
from neurodbg.models import catalogue, provision

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model",
                   "vocab.txt")


def load_model(source: str | os.PathLike[str] | nn.Module = "default", *, tokenizer: Any = None,
               device: str | torch.device | None = None, dtype: torch.dtype | None = None,
               attn_implementation: str | None = None, progress: bool = True,
               weights: str | os.PathLike[str] | None = None) -> Model:
    """Load `source` and return it wrapped as a `Model` in eval mode. Vision models by name
    (`digits`, torchvision's `resnet18` …) take an optional `weights` file."""
    if isinstance(source, nn.Module):
        return Model(source, tokenizer, name=type(source).__name__)
    text = os.fspath(source)
    from neurodbg.vision.zoo import is_vision_name, load_vision_model

    if catalogue.lookup(text) is None and is_vision_name(text):
        model = load_vision_model(text, weights=weights, progress=progress)
        if device is not None:
            model.module.to(device)
        return model
    if weights is not None:
        raise ModelLoadError("--weights goes with a vision model name (digits, resnet18, vit_b_16, ...)")
    entry = catalogue.lookup(text)
    path = Path(text).expanduser()
    if entry is not None and not path.exists():
        model_dir = provision.pull(entry, progress=progress)
        name, label = entry.name, entry.name
    elif path.suffix.lower() == ".gguf":
        model_dir = provision.cached_gguf(path, progress=progress)
        name, label = path.stem, str(path)
    elif path.is_dir():
        model_dir, name, label = path, path.name, str(path)
    elif path.exists():
        raise ModelLoadError(f"{path} is a file but not a GGUF; give a model directory, a .gguf file or a hub id")
    elif _looks_like_path(text):
        raise ModelLoadError(f"no such model file or directory: {text}")
    else:
        model_dir, name, label = Path(text), text, text  # a hub id
    module, tok = _load_hf(model_dir, label, device=device, dtype=dtype, attn_implementation=attn_implementation)
    preprocess, labels = _image_processing(model_dir, module) if tok is None and tokenizer is None else (None, None)
    return Model(module, tokenizer or tok, name=name, source=label, preprocess=preprocess, labels=labels)


def _image_processing(model_dir: Path, module: nn.Module) -> tuple[Any, list[str] | None]:
    """A Hugging Face vision model's preprocessing (its AutoImageProcessor) and class names."""
    config = getattr(module, "config", None)
    if getattr(config, "num_channels", None) is None:
        return None, None
    try:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(str(model_dir))
    except (OSError, ValueError, KeyError, TypeError):
        return None, None

    def preprocess(image: Any) -> torch.Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    # its size and normalisation, for input_spec
    preprocess.processor = processor        # type: ignore[attr-defined]

    id2label = getattr(config, "id2label", None) or {}
    labels = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(len(id2label))] or None
    return preprocess, labels


def _looks_like_path(text: str) -> bool:
    """Hub ids read `name` or `org/name`; anything else that does not exist is a missing path."""
    return (text.startswith((".", "/", "~")) or text.count("/") > 1
            or text.endswith((".json", ".safetensors", ".bin", ".gguf", ".pt")))


def _load_hf(model_dir: Path, label: str, *, device: str | torch.device | None, dtype: torch.dtype | None,
             attn_implementation: str | None) -> tuple[nn.Module, Any]:
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    local = model_dir.is_dir()
    if local and not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"{model_dir} has no config.json; it is not a Hugging Face model directory")
    try:
        config = AutoConfig.from_pretrained(str(model_dir))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot load {label}: {_first_line(exc)}") from None
    kwargs: dict[str, Any] = {"dtype": dtype or "auto"}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    arch = (getattr(config, "architectures", None) or [None])[0]
    classes = [getattr(transformers, arch)] if arch and hasattr(transformers, arch) else []
    classes += [transformers.AutoModelForCausalLM, transformers.AutoModel]
    module: nn.Module | None = None
    errors: list[str] = []
    for cls in classes:
        try:
            module = cls.from_pretrained(str(model_dir), **kwargs)
            break
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            errors.append(_first_line(exc))
    if module is None:
        raise ModelLoadError(f"cannot load weights of {label}: {errors[0] if errors else 'unknown error'}")
    if device is not None:
        module.to(device)
    module.eval()
    tok = None  # a model without a tokenizer still traces on tensors
    if not local or any((model_dir / f).is_file() for f in TOKENIZER_FILES):
        try:
            tok = AutoTokenizer.from_pretrained(str(model_dir))
        except (OSError, ValueError, KeyError, TypeError):
            tok = None
    if tok is not None and len(tok) == 0:
        tok = None
    return module, tok


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
