"""The explainer registry: `stat`, `local:MODEL`, `openai:MODEL` -> an explainer and
the simulator that scores it."""

from __future__ import annotations

import os
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
        from neurodbg.describe.chat_backends import LocalChat, OpenAIChat
        from neurodbg.describe.llm_explainer import LLMExplainer
        from neurodbg.describe.llm_simulator import LLMSimulator

        backend: Any
        if kind == "local":
            backend = LocalChat(name, device=options.device)
        else:
            base = options.api_base or os.environ.get("NEURODBG_OPENAI_BASE_URL") or os.environ.get(
                "OPENAI_BASE_URL") or "https://api.openai.com/v1"
            key = options.api_key or os.environ.get("NEURODBG_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
            backend = OpenAIChat(name, base, key, timeout=options.timeout)
        explainer = LLMExplainer(backend, background.decode, candidates=options.candidates,
                                 temperature=options.temperature)
        sim_model = backend.model if kind == "local" and name == options.simulator_model else None
        return explainer, LLMSimulator(sim_model or options.simulator_model, background.decode,
                                       device=options.device)
    raise NeurodbgError(f"unknown explainer {spec!r}; choose one of {', '.join(KINDS)}")
