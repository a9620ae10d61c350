"""Hooks, interventions (data) and on-the-fly reducers."""

from neurodbg.trace.interventions import (
    Ablate,
    Add,
    AddVector,
    Clamp,
    Intervention,
    InterventionSpec,
    Patch,
    Scale,
    SetValue,
    dumps,
    loads,
    parse_interventions,
)
from neurodbg.trace.tracer import Trace

__all__ = [
    "Ablate",
    "Add",
    "AddVector",
    "Clamp",
    "Intervention",
    "InterventionSpec",
    "Patch",
    "Scale",
    "SetValue",
    "Trace",
    "dumps",
    "loads",
    "parse_interventions",
]
