"""Apply one intervention to one chunk of a site's tensor, out of place.

Coordinates outside the intervention keep their exact bits: the edit is a
`torch.where` between the original tensor and the edited candidate."""

from __future__ import annotations

import torch

from neurodbg.errors import InterventionError, NeuronIndexError
from neurodbg.trace.interventions import (
    Ablate,
    Add,
    AddVector,
    Clamp,
    Intervention,
    Patch,
    Scale,
    SetValue,
    Values,
)

TOKEN_DIM = 1


def absolute_tokens(tokens: list[int], prompt_len: int) -> list[int]:
    """Negative positions count back from the end of the prompt."""
    return [t + prompt_len if t < 0 else t for t in tokens]


def token_mask(iv: Intervention, positions: torch.Tensor, prompt_len: int) -> torch.Tensor:
    if iv.tokens == "all":
        return torch.ones_like(positions, dtype=torch.bool)
    if iv.tokens == "prompt":
        return positions < prompt_len
    if iv.tokens == "generated":
        return positions >= prompt_len
    wanted = torch.tensor(absolute_tokens(iv.tokens, prompt_len), dtype=positions.dtype, device=positions.device)
    return torch.isin(positions, wanted)


def _per_neuron(values: Values, iv: Intervention, width: int, like: torch.Tensor) -> torch.Tensor:
    """A width-long vector holding each named neuron's value (a scalar broadcasts)."""
    if isinstance(values, (int, float)):
        return torch.full((width,), float(values), dtype=like.dtype, device=like.device)
    if iv.neurons is None or len(values) != len(iv.neurons):
        raise InterventionError(
            f"{iv.op} on {iv.site}: a list of {len(values)} values needs exactly that many neurons")
    out = torch.zeros(width, dtype=like.dtype, device=like.device)
    out[torch.tensor(iv.neurons, device=like.device)] = torch.tensor(values, dtype=like.dtype, device=like.device)
    return out


def _candidate(iv: Intervention, value: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
    width = value.shape[-1]
    if isinstance(iv, (SetValue, Clamp)):
        return _per_neuron(iv.value, iv, width, value).expand_as(value)
    if isinstance(iv, Scale):
        return value * _per_neuron(iv.factor, iv, width, value)
    if isinstance(iv, Add):
        return value + _per_neuron(iv.value, iv, width, value)
    if isinstance(iv, Ablate):
        return torch.zeros_like(value)
    if isinstance(iv, AddVector):
        if len(iv.vector) != width:
            raise InterventionError(f"add_vector on {iv.site}: vector has {len(iv.vector)} entries, site has {width}")
        vec = torch.tensor(iv.vector, dtype=value.dtype, device=value.device)
        return value + iv.scale * vec
    if isinstance(iv, Patch):
        assert source is not None
        return source
    raise InterventionError(f"unknown intervention op {iv.op!r}")


def apply_edit(iv: Intervention, value: torch.Tensor, *, site_name: str, offset: int, prompt_len: int,
               source: torch.Tensor | None = None) -> torch.Tensor:
    """Return `value` with `iv` applied. `offset` is the absolute position of this
    chunk's first token (non-zero for later steps of a cached generation)."""
    width = value.shape[-1]
    if iv.neurons is not None and iv.neurons and max(iv.neurons) >= width:
        raise NeuronIndexError(f"neuron index {max(iv.neurons)} out of range for {site_name}, "
                               f"which has {width} neurons (0-{width - 1})")
    neuron_mask = torch.zeros(width, dtype=torch.bool, device=value.device)
    if iv.neurons is None:
        neuron_mask[:] = True
    else:
        neuron_mask[torch.tensor(iv.neurons, dtype=torch.long, device=value.device)] = True
    if value.dim() >= 3:
        length = value.shape[TOKEN_DIM]
        positions = torch.arange(offset, offset + length, device=value.device)
        tmask = token_mask(iv, positions, prompt_len)
        shape = [1, length] + [1] * (value.dim() - 3) + [width]
        mask = (tmask.view(-1, 1) & neuron_mask.view(1, -1)).view(shape)
        if isinstance(iv, Patch):
            source = _align_source(iv, source, value, positions, site_name)
    else:
        if iv.tokens != "all":
            raise InterventionError(f"{site_name} has no token axis (shape {tuple(value.shape)}); use tokens='all'")
        mask = neuron_mask
        if isinstance(iv, Patch):
            source = _align_source(iv, source, value, None, site_name)
    candidate = _candidate(iv, value, source).to(value.dtype)
    if isinstance(iv, Clamp):
        mask = mask & (value > 0 if iv.side == "positive" else value < 0)
    return torch.where(mask, candidate, value)


def _align_source(iv: Patch, source: torch.Tensor | None, value: torch.Tensor, positions: torch.Tensor | None,
                  site_name: str) -> torch.Tensor:
    if source is None:
        raise InterventionError(f"patch on {site_name}: no source named {iv.source!r} holds this site")
    if positions is not None:
        if source.dim() != value.dim():
            raise InterventionError(f"patch on {site_name}: source has shape {tuple(source.shape)}, "
                                    f"site has {tuple(value.shape)}")
        if int(positions[-1]) >= source.shape[TOKEN_DIM]:
            raise NeuronIndexError(f"patch on {site_name}: source {iv.source!r} has {source.shape[TOKEN_DIM]} "
                                   f"tokens, position {int(positions[-1])} was asked")
        source = source.index_select(TOKEN_DIM, positions.to(source.device))
    if source.shape[0] not in (1, value.shape[0]) or source.shape[1:] != value.shape[1:]:
        raise InterventionError(f"patch on {site_name}: source shape {tuple(source.shape)} does not fit "
                                f"{tuple(value.shape)}")
    return source.to(device=value.device, dtype=value.dtype).expand_as(value)
