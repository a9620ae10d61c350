"""Check interventions against a model and a prompt before a long run starts, so
an edit that cannot apply is refused up front (one clear error) instead of
failing midway through a generation or a stream.

Every check the trace itself makes is made here, by the trace itself: the
interventions are applied, on every token, in a forward pass over the prompt's
first token (unknown or non-editable site, neuron beyond a site's width, a value
list that does not match its neurons, a vector of the wrong length, a patch
without its source). Explicit token positions must lie in the prompt."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from neurodbg.errors import NeuronIndexError
from neurodbg.model import Model
from neurodbg.trace.interventions import Intervention
from neurodbg.trace.tracer import Sources


def check_interventions(model: Model, interventions: Iterable[Intervention], ids: torch.Tensor, *,
                        sources: Sources | None = None) -> None:
    """Raise the error the run would raise (InterventionError, NeuronIndexError, UnknownSiteError)."""
    edits = list(interventions)
    if not edits:
        return
    length = int(ids.shape[-1])
    for iv in edits:
        if isinstance(iv.tokens, list):
            bad = [t for t in iv.tokens if not -length <= t < length]
            if bad:
                raise NeuronIndexError(f"{iv.op} on {iv.site}: token position {bad[0]} is outside the prompt "
                                       f"(positions 0-{length - 1}, or -{length} to -1 from its end); use "
                                       f"tokens 'generated' for generated tokens")
    everywhere = [iv.model_copy(update={"tokens": "all"}) for iv in edits]
    first = ids.reshape(1, -1)[:, :1].to(model.device)
    with torch.no_grad(), model.trace(interventions=everywhere, sources=sources) as tr:
        tr.forward({"input_ids": first})
