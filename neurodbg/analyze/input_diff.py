"""Compare two inputs: which neurons respond differently to A and to B.

Two images through a vision model (a neuron is a channel, summarised over the
positions of its feature map), or two prompts through a language model (a neuron
summarised over the prompt's tokens, position 0 — the attention sink — left out
unless asked, as in an atlas). Per site, the neurons whose summaries differ most,
B − A, either way; a bar chart shows them side by side (the seeds' example: a red
image lights some channels, a blue one others)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from neurodbg.errors import NeurodbgError
from neurodbg.model import Model

Reduce = Literal["max", "mean"]


@dataclass
class NeuronDiff:
    neuron: int
    a: float
    b: float

    @property
    def diff(self) -> float:
        return self.b - self.a

    def to_dict(self) -> dict[str, Any]:
        return {"neuron": self.neuron, "a": self.a, "b": self.b, "diff": self.diff}


@dataclass
class InputDiff:
    model: str
    a: str
    b: str
    reduce: Reduce
    kind: Literal["images", "prompts"]
    top: dict[str, list[NeuronDiff]] = field(default_factory=dict)      # per site, biggest |B - A| first
    summaries: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "a": self.a, "b": self.b, "kind": self.kind, "reduce": self.reduce,
                "sites": {name: {"neurons": int(self.summaries[name][0].numel()),
                                 "top": [d.to_dict() for d in rows]} for name, rows in self.top.items()}}

    def figure(self, path: str | Path) -> Path:
        from neurodbg.viz.figures import plt, save_figure

        sites = list(self.top)[:8]
        fig, axes = plt.subplots(len(sites), 1, figsize=(10, 2.6 * len(sites) + 0.6), dpi=100, squeeze=False,
                                 layout="constrained")
        for ax, name in zip(axes[:, 0], sites, strict=True):
            rows = self.top[name]
            x = torch.arange(len(rows)).numpy()
            ax.bar(x - 0.2, [r.a for r in rows], width=0.4, label="A", color="#4c72b0")
            ax.bar(x + 0.2, [r.b for r in rows], width=0.4, label="B", color="#dd8452")
            ax.set_xticks(x, [str(r.neuron) for r in rows], fontsize=7)
            ax.set_xlabel("neuron", fontsize=8)
            ax.set_title(f"{name}: the {len(rows)} neurons that differ most ({self.reduce} over positions)",
                         fontsize=9)
            ax.tick_params(labelsize=7)
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(f"{self.model} · A: {_short(self.a)}  ·  B: {_short(self.b)}", fontsize=10)
        return save_figure(fig, path)


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarise(value: torch.Tensor, *, reduce: Reduce, channels_first: bool, first_position: int = 0
              ) -> torch.Tensor:
    """One input's site output (batch axis dropped) -> one figure per neuron."""
    x = value.detach().float()
    if channels_first and x.dim() == 3:               # [C, H, W]: over the feature map
        flat = x.flatten(1)
    elif x.dim() == 2:                                # [tokens, neurons]: over the counted tokens
        if first_position >= x.shape[0]:
            raise NeurodbgError("the prompt has no token after position 0; pass include_first=True")
        flat = x[first_position:].transpose(0, 1)
    elif x.dim() == 1:
        return x.clone()
    else:
        raise NeurodbgError(f"cannot summarise a site output of shape {list(x.shape)} per neuron")
    return flat.amax(1) if reduce == "max" else flat.mean(1)


def diff_inputs(model: Model, a: Any, b: Any, sites: Sequence[str] | None = None, *, top: int = 10,
                reduce: Reduce = "max", include_first: bool = False,
                labels: tuple[str, str] | None = None) -> InputDiff:
    """The neurons of `sites` that respond most differently to `a` and `b` (two images for a vision
    model, two prompts for a language model). `labels` name the inputs in the result (default: the
    prompts, or the images' paths)."""
    if reduce not in ("max", "mean"):
        raise NeurodbgError(f"unknown reduce {reduce!r}; choose max or mean")
    if top < 1:
        raise NeurodbgError("top must be at least 1")
    images = model.preprocess is not None
    if sites is None:
        sites = ["stages.*.blocks.*.out"] if images else ["layers.*.mlp.act"]
    resolved = model.resolve(list(sites))
    names = [s.name for s in resolved]
    summaries: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    names_of: list[str] = []
    for one in (a, b):
        if images:
            from neurodbg.vision.images import batch_of, to_pil

            inputs: Any = batch_of(model, [to_pil(one)])
            names_of.append(str(one) if isinstance(one, (str, Path)) else type(one).__name__)
        else:
            if not isinstance(one, str):
                raise NeurodbgError(f"{model.name} is a language model: compare two prompts")
            inputs = one
            names_of.append(one)
        tr = model.run(inputs, capture=names)
        for site in resolved:
            summaries[site.name].append(summarise(tr[site.name][0], reduce=reduce,
                                                  channels_first=site.channel_axis == 1,
                                                  first_position=0 if images or include_first else 1))
    shown = labels or (names_of[0], names_of[1])
    out = InputDiff(model.name, shown[0], shown[1], reduce, "images" if images else "prompts")
    for name in names:
        sa, sb = summaries[name]
        if sa.shape != sb.shape:
            raise NeurodbgError(f"{name}: the two inputs give {list(sa.shape)} and {list(sb.shape)} neurons")
        out.summaries[name] = (sa, sb)
        gap = (sb - sa).abs()
        order = sorted(range(len(gap)), key=lambda i: (-float(gap[i]), i))[:top]
        out.top[name] = [NeuronDiff(i, float(sa[i]), float(sb[i])) for i in order]
    return out
