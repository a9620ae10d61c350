"""`moe report`: the router health of every MoE layer over a corpus, and its heatmap.

Batches of corpus sequences run through the model (stopping after the last router)
with the routers' three outputs captured; `RouterStats` folds each batch in, so memory
does not grow with the corpus."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from neurodbg.analyze.expert_outputs import watch_expert_outputs
from neurodbg.analyze.router_health import HealthThresholds, LayerHealth, RouterStats
from neurodbg.errors import CorpusError, NeurodbgError
from neurodbg.model import Model
from neurodbg.progress import RateProgress


@dataclass
class MoeReport:
    model: str
    corpus: str
    tokens: int
    capacity_factor: float
    layers: list[LayerHealth]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "corpus": self.corpus, "tokens": self.tokens,
                "capacity_factor": self.capacity_factor, "layers": [layer.to_dict() for layer in self.layers]}

    def figure(self, path: str | Path) -> Path:
        from neurodbg.viz.moe import moe_heatmap

        return moe_heatmap(self, Path(path))


def router_layers(model: Model) -> list[int]:
    """The layers whose router the model's adapter names; a dense model is refused."""
    layers = sorted(int(name.split(".")[1]) for name in model.sites if name.endswith(".router.logits"))
    if not layers:
        raise NeurodbgError(f"{model.name} is not a mixture of experts: it has no router sites "
                            f"(layers.{{i}}.router.logits)")
    return layers


def moe_report(model: Model, source: Any, *, tokens: int = 16_384, seq_len: int = 64, batch_size: int = 8,
               capacity_factor: float = 1.25, thresholds: HealthThresholds | None = None, zombies: bool = False,
               progress: bool = True) -> MoeReport:
    """Router health of every MoE layer over the first `tokens` tokens of `source` (a corpus).
    `zombies`: also each expert's output variance (recomputes the routed experts: `expert_outputs`)."""
    from neurodbg.corpus import sequences

    layers = router_layers(model)
    if not math.isfinite(capacity_factor) or capacity_factor <= 0:
        raise NeurodbgError(f"the capacity factor must be a positive number, not {capacity_factor}")
    if model.tokenizer is None:
        raise CorpusError(f"{model.name} has no tokenizer; a corpus report needs one")
    names = [f"layers.{i}.router.{part}" for i in layers for part in ("logits", "experts", "weights")]
    if zombies:       # the last layer's whole MoE block runs too (the trace stops after it)
        names.append(f"layers.{layers[-1]}.mlp.out")
    stats: dict[int, RouterStats] = {}
    wanted = math.ceil(tokens / seq_len)
    stream = islice(sequences(source, model.tokenizer, seq_len=seq_len), wanted)
    seen = 0
    with RateProgress(progress, "routing", wanted * seq_len, unit="tokens") as bar, \
            watch_expert_outputs(model, layers if zombies else []) as outputs:
        while batch := list(islice(stream, batch_size)):
            ids = torch.tensor([s.ids for s in batch], dtype=torch.long, device=model.device)
            with model.trace(capture=names, stop_early=True) as tr:
                tr.forward({"input_ids": ids, "use_cache": False})
            for i in layers:
                logits, chosen = tr[f"layers.{i}.router.logits"], tr[f"layers.{i}.router.experts"]
                if i not in stats:
                    stats[i] = RouterStats(i, int(logits.shape[-1]), int(chosen.shape[-1]))
                stats[i].update(logits, chosen, tr[f"layers.{i}.router.weights"], capacity_factor)
            seen += ids.numel()
            bar.advance(ids.numel())
    if seen == 0:
        raise CorpusError(f"corpus {getattr(source, 'name', source)} yielded no sequence of {seq_len} tokens")
    return MoeReport(model.name, str(getattr(source, "name", source)), seen, capacity_factor,
                     [stats[i].health(thresholds, outputs[i].variance() if i in outputs else None) for i in layers])


def token_routes(model: Model, prompt: str | torch.Tensor, *, chat: bool = False) -> dict[str, Any]:
    """Which experts handled each token of `prompt` (text, or ids [1, T]) at each MoE layer, with
    their routing weights (in the router's order: the highest first)."""
    layers = router_layers(model)
    ids = model.encode(prompt, chat=chat) if isinstance(prompt, str) else prompt
    names = [f"layers.{i}.router.{part}" for i in layers for part in ("experts", "weights")]
    with model.trace(capture=names, stop_early=True) as tr:
        tr.forward({"input_ids": ids.to(model.device), "use_cache": False})
    tokens = [model.tokenizer.decode([int(t)]) for t in ids[0]] if model.tokenizer is not None else []
    routes = []
    for position, token in enumerate(tokens):
        routes.append({"position": position, "token": token, "layers": [
            {"layer": i, "experts": tr[f"layers.{i}.router.experts"][0, position].tolist(),
             "weights": [round(float(w), 6) for w in tr[f"layers.{i}.router.weights"][0, position]]}
            for i in layers]})
    return {"model": model.name, "tokens": routes}
