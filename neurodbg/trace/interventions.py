"""Interventions as plain data: one JSON format shared by the Python API, the
CLI, the HTTP API and the web app.

Each intervention names a site (or a site pattern), the neurons (last-axis
coordinates; omitted = all) and the token positions it applies to: a list of
absolute positions (negative ones count back from the end of the prompt), or
one of "all", "prompt", "generated"."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from neurodbg.errors import InterventionError

Tokens = list[int] | Literal["all", "prompt", "generated"]
Values = float | list[float]


class _Base(BaseModel):
    # non-finite numbers (JSON's NaN / Infinity, which Python's json reads) are refused everywhere
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    site: str = Field(min_length=1)
    neurons: list[Annotated[int, Field(ge=0)]] | None = None
    tokens: Tokens = "all"


class SetValue(_Base):
    """Set the named coordinates to `value` (one number, or one per neuron)."""

    op: Literal["set"] = "set"
    value: Values


class Clamp(_Base):
    """Set the named coordinates to `value` (one number, or one per neuron) only where their
    value has the sign `side` names (> 0 for positive, < 0 for negative); the other side, and
    zeros, keep their exact bits. Steering's default: a neuron selected for its positive tail
    is clamped on that side only, as the seeds describe."""

    op: Literal["clamp"] = "clamp"
    value: Values
    side: Literal["positive", "negative"]


class Scale(_Base):
    """Multiply the named coordinates by `factor` (one number, or one per neuron)."""

    op: Literal["scale"] = "scale"
    factor: Values


class Add(_Base):
    """Add `value` (one number, or one per neuron) to the named coordinates."""

    op: Literal["add"] = "add"
    value: Values


class Ablate(_Base):
    """Zero the named coordinates."""

    op: Literal["ablate"] = "ablate"


class AddVector(_Base):
    """Add `scale` x `vector` along the last axis (e.g. a steering vector)."""

    op: Literal["add_vector"] = "add_vector"
    vector: list[float] = Field(min_length=1)
    scale: float = 1.0


class Patch(_Base):
    """Replace the named coordinates with the values another run captured at the
    same site, looked up by `source` in the sources handed to the trace."""

    op: Literal["patch"] = "patch"
    source: str = Field(min_length=1)


class _RouterEdit(_Base):
    """A mixture of experts' routing changed for the named tokens: `site` is a router site
    (`layers.{i}.router.logits`, or a pattern over them); `experts` are expert indices.
    The router's probabilities are kept; only which experts are chosen changes, and the
    chosen ones' weights are renormalised as the family's router does."""

    neurons: None = None
    experts: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)


class ForceExperts(_RouterEdit):
    """Route the tokens to `experts` (they take the first slots, in this order; any slots left
    of the k keep the router's next choices)."""

    op: Literal["force_experts"] = "force_experts"


class BanExperts(_RouterEdit):
    """Never route the tokens to `experts` (the router's next choices take their slots)."""

    op: Literal["ban_experts"] = "ban_experts"


RouterEdit = ForceExperts | BanExperts

Intervention = Annotated[SetValue | Clamp | Scale | Add | Ablate | AddVector | Patch | ForceExperts | BanExperts,
                         Field(discriminator="op")]

SPEC_VERSION: Literal[1] = 1


class InterventionSpec(BaseModel):
    """A saved list of interventions: the file format of `--intervene`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    version: Literal[1] = SPEC_VERSION
    interventions: list[Intervention] = Field(default_factory=list)


_LIST = TypeAdapter(list[Intervention])


def _one_line(exc: ValidationError) -> str:
    errors = exc.errors()
    # a number that is NaN or infinite fails every branch of `float | list[float]`; name the real cause
    err = next((e for e in errors if e["type"] == "finite_number"), errors[0])
    where = ".".join(str(p) for p in err["loc"]) or "top level"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"invalid intervention at {where}: {err['msg']}{more}"


def parse_interventions(data: object) -> list[Intervention]:
    """Validate already-decoded JSON: a list of interventions or a spec object."""
    try:
        if isinstance(data, dict) and "interventions" in data:
            return list(InterventionSpec.model_validate(data).interventions)
        if isinstance(data, dict):
            data = [data]
        return _LIST.validate_python(data)
    except ValidationError as exc:
        raise InterventionError(_one_line(exc)) from None


def loads(text: str) -> list[Intervention]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InterventionError(f"malformed intervention JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") \
            from None
    return parse_interventions(data)


def dumps(interventions: list[Intervention], *, indent: int | None = 2) -> str:
    spec = InterventionSpec(interventions=list(interventions))
    return spec.model_dump_json(indent=indent)
