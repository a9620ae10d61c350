"""The "all at once" LLM simulator: one forward pass of a local model per
excerpt. The prompt lists the excerpt's tokens one per line, each followed by a
tab and a placeholder; at each tab the model's next-token logits over the digit
tokens 0–10 (those the tokenizer has as single tokens) give an expected
activation. No logprob API is needed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from neurodbg.describe.exemplars import Excerpt
from neurodbg.describe.explanation import Explanation
from neurodbg.errors import ExplainerError

HEADER = ("A neuron in a language model is described as follows: {text}\n"
          "For each token of the text below, the neuron's activation on a 0-10 scale "
          "(0: not at all, 10: as strongly as ever):\n")


class LLMSimulator:
    def __init__(self, model: str | Any, decode: Callable[[int], str], *, device: str | None = None) -> None:
        from neurodbg.model import Model
        from neurodbg.models.loader import load_model

        self.model: Model = model if isinstance(model, Model) else load_model(model, device=device, progress=False)
        tok = self.model.tokenizer
        self.decode = decode
        self.name = f"llm-all-at-once:{self.model.name}"
        digits: dict[int, int] = {}
        for value in range(11):
            ids = tok.encode(str(value), add_special_tokens=False)
            if len(ids) == 1:
                digits[value] = ids[0]
        if len(digits) < 2:
            raise ExplainerError(f"{self.model.name}'s tokenizer has no single-token digits to read activations from")
        self.values = torch.tensor(list(digits), dtype=torch.float32)
        self.digit_ids = torch.tensor(list(digits.values()))
        self.tab = tok.encode("\t", add_special_tokens=False)
        self.unknown = tok.encode("unknown\n", add_special_tokens=False)

    @torch.no_grad()
    def simulate(self, explanation: Explanation, excerpts: Sequence[Excerpt]) -> list[np.ndarray]:
        tok = self.model.tokenizer
        head = tok.encode(HEADER.format(text=explanation.text), add_special_tokens=False)
        out = []
        for e in excerpts:
            ids, slots = list(head), []
            for token in e.ids:
                text = self.decode(int(token)).replace("\n", "\\n").replace("\t", "\\t") or " "
                ids += tok.encode(text, add_special_tokens=False) + self.tab
                slots.append(len(ids) - 1)        # the logits after the tab predict the value
                ids += self.unknown
            logits = self.model.module(torch.tensor([ids], device=self.model.device)).logits[0, slots]
            probs = torch.softmax(logits[:, self.digit_ids.to(logits.device)].float(), dim=-1).cpu()
            out.append((probs @ self.values).numpy())
        return out
