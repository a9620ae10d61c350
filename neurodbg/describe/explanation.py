"""An explanation of one polarity of one neuron: a sentence, optionally a
machine-readable form (statistical explainer), and its score once simulated."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from neurodbg.describe.exemplars import NeuronExemplars


@dataclass
class Explanation:
    layer: int
    neuron: int
    polarity: str
    explainer: str
    candidate: int
    text: str
    spec: dict[str, Any] | None = None
    score: float | None = None
    simulator: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"L{self.layer}/N{self.neuron}{self.polarity}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["id"] = self.id
        out.pop("extra")
        return out


class Explainer(Protocol):
    """Turns a neuron's shown exemplars into one or more candidate explanations."""
    name: str

    def explain(self, exemplars: NeuronExemplars) -> list[Explanation]: ...


class Simulator(Protocol):
    """Predicts per-token activations (same scale-free sense as the exemplars) from an explanation."""
    name: str

    def simulate(self, explanation: Explanation, excerpts: list[Any]) -> list[Any]: ...
