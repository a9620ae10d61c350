"""The explainer registry: `stat`, `local:MODEL`, `openai:MODEL` -> an explainer and
the simulator that scores it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neurodbg.describe.explanation import Explainer, Simulator
from neurodbg.describe.stat_explainer import Background, StatisticalExplainer
from neurodbg.describe.stat_simulator import StatisticalSimulator
from neurodbg.errors import NeurodbgError

KINDS = ("stat", "local:MODEL", "openai:MODEL")


@dataclass
class LLMOptions:
    candidates: int = 1               # descriptions drawn per neuron and polarity
    temperature: float = 0.7
    api_base: str | None = None       # openai: endpoint base URL (…/v1)
    api_key: str | None = None
    timeout: float = 60.0
    simulator_model: str = "default"  # local model for the all-at-once simulator
    device: str | None = None


def make(spec: str, background: Background, options: LLMOptions | None = None) -> tuple[Explainer, Simulator]:
    options = options or LLMOptions()
    kind, _, name = spec.partition(":")
    if kind == "stat" and not name:
        return StatisticalExplainer(background), StatisticalSimulator(background)
    if kind in ("local", "openai") and name:
        from neurodbg.describe.chat_backends import open_chat
        from neurodbg.describe.llm_explainer import LLMExplainer
        from neurodbg.describe.llm_simulator import LLMSimulator

        backend: Any = open_chat(spec, api_base=options.api_base, api_key=options.api_key,
                                 timeout=options.timeout, device=options.device)
        explainer = LLMExplainer(backend, background.decode, candidates=options.candidates,
                                 temperature=options.temperature)
        sim_model = backend.model if kind == "local" and name == options.simulator_model else None
        return explainer, LLMSimulator(sim_model or options.simulator_model, background.decode,
                                       device=options.device)
    raise NeurodbgError(f"unknown explainer {spec!r}; choose one of {', '.join(KINDS)}")
