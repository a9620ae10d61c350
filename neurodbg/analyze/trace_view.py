"""What `neurodbg trace` shows: one traced run of a prompt, the most active neurons
of every captured site with the token where each peaks, and the figures (a
heatmap of all sites or of one site's top neurons, a bar chart of one token).

Position 0 is left out of the ranking and the figures by default, as the scan
leaves it out of an atlas: without a BOS token it is the attention sink, whose
activations (thousands, in the last layers of the default model) are shared by
every prompt and say nothing about this one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurodbg.analyze.top_neurons import NeuronHit, Polarity, top_neurons
from neurodbg.errors import NeurodbgError, NeuronIndexError
from neurodbg.model import Model
from neurodbg.trace.interventions import Intervention


@dataclass
class SiteView:
    name: str
    shape: list[int]
    top: list[NeuronHit]


@dataclass
class TraceView:
    model: str
    prompt: str
    tokens: list[str]
    first_position: int                   # the first position ranked (1 when position 0 is left out)
    polarity: Polarity
    sites: dict[str, SiteView] = field(default_factory=dict)
    captures: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def note(self) -> str | None:
        if self.first_position == 0 or len(self.tokens) < 2:
            return None
        return ("position 0 (the attention sink, huge activations shared by every prompt) is left out, "
                "as in an atlas; --include-first counts it")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "prompt": self.prompt, "tokens": self.tokens,
                "first_position": self.first_position, "skipped_positions": list(range(self.first_position)),
                "polarity": self.polarity, "note": self.note,
                "sites": {name: {"shape": s.shape, "top": [
                    {**h.to_dict(), "token": self.tokens[h.token_index] if h.token_index is not None
                     and h.token_index < len(self.tokens) else None} for h in s.top]}
                          for name, s in self.sites.items()}}

    # -- figures --------------------------------------------------------------------------------
    def _counted(self, name: str) -> torch.Tensor:
        """[tokens, neurons] of the first batch row, from the first counted position."""
        acts = self.captures[name][0].float()
        if acts.dim() != 2:
            raise NeurodbgError(f"{name} has shape {tuple(self.captures[name].shape)}; a heatmap needs "
                                f"tokens x neurons")
        return acts[self.first_position:] if acts.shape[0] > self.first_position else acts

    def heatmap(self, path: str | Path, *, columns: int = 48) -> Path:
        """One site: its top `columns` neurons at every counted token. Several sites of one width:
        each neuron's max over the counted tokens, sites by neurons."""
        from neurodbg.viz import heatmap

        names = list(self.sites)
        skipped = "; position 0 left out" if self.first_position else ""
        if len(names) == 1:
            acts = self._counted(names[0])
            score = {"pos": acts, "neg": -acts, "abs": acts.abs()}[self.polarity].amax(0)
            cols = score.topk(min(columns, score.numel())).indices.sort().values
            rows = self.tokens[self.first_position:] if len(self.tokens) > self.first_position else self.tokens
            return heatmap(acts[:, cols].numpy(), row_labels=[repr(t)[1:-1] for t in rows],
                           col_labels=[f"N{int(c)}" for c in cols],
                           title=f"{names[0]}: top {len(cols)} neurons{skipped}", path=path)
        grid = []
        for name in names:
            value = self.captures[name][0].float()
            grid.append(self._counted(name).amax(0) if value.dim() == 2 else value.reshape(-1))
        if len({row.numel() for row in grid}) != 1:
            raise NeurodbgError("sites of different widths cannot share a heatmap; pass one --site")
        values = torch.stack(grid).numpy()
        return heatmap(values, row_labels=names, col_labels=[f"N{i}" for i in range(values.shape[1])],
                       title=f"max activation over tokens{skipped}", path=path, ylabel="site")

    def bars(self, path: str | Path, *, token: int = -1, site: str | None = None) -> Path:
        """Every neuron of one site at one token (negative counts from the end)."""
        from neurodbg.viz import bar_chart

        name = site or next(iter(self.sites))
        acts = self.captures[name][0].float()
        n = acts.shape[0]
        index = token + n if token < 0 else token
        if not 0 <= index < n:
            raise NeuronIndexError(f"token {token} out of range for a prompt of {n} tokens")
        return bar_chart(acts[index].numpy(), title=f"{name} at token {index} ({self.tokens[index]!r})", path=path)


def trace_view(model: Model, prompt: str, sites: Sequence[str] = ("layers.*.mlp.act",), *, top: int = 10,
               polarity: Polarity = "pos", include_first: bool = False,
               interventions: Iterable[Intervention] = (), chat: bool = False) -> TraceView:
    """Trace `prompt` once (with `interventions`, if any) and rank each site's neurons by their
    extreme over the counted tokens."""
    names = [s.name for s in model.resolve(list(sites))]
    if not names:
        raise NeurodbgError(f"no site matches {', '.join(sites)}")
    edits = list(interventions)
    tr = model.run(prompt, capture=names, interventions=edits, chat=chat)
    tokens = model.tokens(model.encode(prompt, chat=chat)[0])
    first = 0 if include_first or len(tokens) < 2 else 1
    view = TraceView(model.name, prompt, tokens, first, polarity, captures=dict(tr.captures))
    for name in names:
        acts = tr[name]
        counted = acts[:, first:] if acts.dim() == 3 and acts.shape[1] > first else acts
        hits = top_neurons(counted, top, polarity)
        if counted is not acts:      # positions back in the prompt's numbering
            hits = [NeuronHit(h.neuron, h.value, None if h.token_index is None else h.token_index + first)
                    for h in hits]
        view.sites[name] = SiteView(name, list(acts.shape), hits)
    return view
