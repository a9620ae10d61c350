"""LLM explainers: show a chat model the exemplars (llm_prompt) and keep each
drawn answer as a candidate description."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from neurodbg.describe.exemplars import NeuronExemplars
from neurodbg.describe.explanation import Explanation
from neurodbg.describe.llm_prompt import clean, explain_messages


class LLMExplainer:
    def __init__(self, backend: Any, decode: Callable[[int], str], *, candidates: int = 1,
                 temperature: float = 0.7) -> None:
        self.backend, self.decode = backend, decode
        self.candidates, self.temperature = candidates, temperature
        self.name = backend.name

    def explain(self, ex: NeuronExemplars) -> list[Explanation]:
        if not ex.shown or max(e.peak for e in ex.shown) <= 0:
            return []
        seed = ex.layer * 100003 + ex.neuron * 2 + (ex.polarity == "-")
        replies = self.backend.chat(explain_messages(ex, self.decode), n=self.candidates,
                                    temperature=self.temperature, seed=seed)
        out = []
        for i, reply in enumerate(replies):
            text = clean(reply)
            if text:
                out.append(Explanation(ex.layer, ex.neuron, ex.polarity, self.name, i, text))
        return out
