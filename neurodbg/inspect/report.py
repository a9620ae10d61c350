"""One anatomy report for a loaded model or a bare config (no weights)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurodbg.errors import NeurodbgError
from neurodbg.inspect.memory import MemoryBill, inference_bill, training_bill
from neurodbg.inspect.params import ParamCount, build_on_meta, count_module, load_config
from neurodbg.inspect.shapes import shapes_of
from neurodbg.inspect.tokenizer_facts import TokenizerFacts, tokenizer_facts
from neurodbg.inspect.tree import Node, build_tree, probe_shapes
from neurodbg.model import Model

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


@dataclass
class BillSettings:
    batch: int = 1
    seq: int = 2048
    infer_dtype: str = "bfloat16"
    train_dtype: str = "bfloat16"
    optimizer: str = "adamw"
    checkpointing: bool = False


@dataclass
class Report:
    name: str
    family: str | None
    params: ParamCount
    tree: Node
    bills: list[MemoryBill] = field(default_factory=list)
    tokenizer: TokenizerFacts | None = None
    n_layers: int = 0
    neurons_per_layer: int | None = None
    config_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, "family": self.family, "config_only": self.config_only,
                **self.params.to_dict(), "n_layers": self.n_layers, "neurons_per_layer": self.neurons_per_layer,
                "memory": {b.mode: b.to_dict() for b in self.bills},
                "tokenizer": self.tokenizer.to_dict() if self.tokenizer else None,
                "tree": self.tree.to_dict()}


def is_config_only(source: str) -> bool:
    """A config.json, or a directory with a config but no weights."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".json":
        return True
    return (path.is_dir() and (path / "config.json").is_file()
            and not any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir()))


def _bills(params: int, config: Any, settings: BillSettings) -> list[MemoryBill]:
    if config is None:
        return []
    try:
        shapes = shapes_of(config)
    except AttributeError:
        return []  # not a transformer config: no architecture-level bill
    return [
        inference_bill(params, shapes, batch=settings.batch, seq=settings.seq, dtype=settings.infer_dtype),
        training_bill(params, shapes, batch=settings.batch, seq=settings.seq, dtype=settings.train_dtype,
                      optimizer=settings.optimizer, checkpointing=settings.checkpointing),
    ]


def report_config(path: str | Path, settings: BillSettings | None = None, depth: int | None = None) -> Report:
    settings = settings or BillSettings()
    config = load_config(path)
    module = build_on_meta(config)
    params = count_module(module)
    shapes = shapes_of(config)
    return Report(name=str(getattr(config, "_name_or_path", "") or Path(path).name), family=config.model_type,
                  params=params, tree=build_tree(module, max_depth=depth),
                  bills=_bills(params.total, config, settings), n_layers=shapes.layers,
                  neurons_per_layer=shapes.intermediate, config_only=True)


def report_model(model: Model, settings: BillSettings | None = None, depth: int | None = None,
                 text: str | None = None, probe: str = "Hello, world") -> Report:
    settings = settings or BillSettings()
    params = count_module(model.module)
    shape_map: dict[str, list[int]] = {}
    probe_input: Any = probe
    if model.tokenizer is not None:
        shape_map = probe_shapes(model.module, model.encode(probe).to(model.device))
    elif model.preprocess is not None:           # a vision model: one mid-grey picture through its preprocessing
        from PIL import Image

        from neurodbg.vision.images import batch_of

        probe_input = batch_of(model, [Image.new("RGB", (224, 224), (128, 128, 128))])
        with torch.no_grad():
            shape_map = probe_shapes(model.module, probe_input)
    neurons = None
    if model.adapter and "layers.0.mlp.act" in model.sites:
        try:
            neurons = int(model.run(probe_input, capture="layers.0.mlp.act")["layers.0.mlp.act"].shape[-1])
        except NeurodbgError:
            neurons = None
    return Report(name=model.name, family=model.family, params=params,
                  tree=build_tree(model.module, shape_map, max_depth=depth),
                  bills=_bills(params.total, model.config, settings),
                  tokenizer=tokenizer_facts(model.tokenizer, text) if model.tokenizer is not None else None,
                  n_layers=model.n_layers, neurons_per_layer=neurons)
