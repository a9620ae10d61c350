"""Token view: at every position, the model's top-k next-token probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from neurodbg.analyze.prompt import Prompt, prepare
from neurodbg.analyze.sampling import Sampling
from neurodbg.model import Model


@dataclass
class Position:
    index: int
    token: str
    template: bool
    top: list[tuple[str, int, float]]          # (token, id, probability) of the next token
    actual_next_prob: float | None              # probability of the token that really follows

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "token": self.token, "template": self.template,
                "top": [{"token": t, "id": i, "prob": round(p, 6)} for t, i, p in self.top],
                "actual_next_prob": None if self.actual_next_prob is None else round(self.actual_next_prob, 6)}


@torch.no_grad()
def token_view(model: Model, text: str | Prompt, *, k: int = 5, chat: bool = False) -> list[Position]:
    prompt = text if isinstance(text, Prompt) else prepare(model, text, chat=chat)
    logits = model.module(prompt.ids.to(model.device)).logits[0].float()
    probs = torch.softmax(logits, dim=-1)
    top = probs.topk(k, dim=-1)
    out = []
    ids = prompt.ids[0].tolist()
    for i in range(prompt.length):
        entries = [(model.tokenizer.decode([int(t)]), int(t), float(p))
                   for t, p in zip(top.indices[i], top.values[i], strict=True)]
        nxt = float(probs[i, ids[i + 1]]) if i + 1 < prompt.length else None
        out.append(Position(i, prompt.tokens[i], prompt.template[i], entries, nxt))
    return out


def generate_view(model: Model, text: str | Prompt, *, max_new_tokens: int = 20, k: int = 5, chat: bool = False,
                  sampling: Sampling | None = None) -> tuple[list[Position], int]:
    """Generation (greedy, or `generate` sampling with `sampling` after seeding with its seed), then
    the token view over prompt + generated tokens. Returns the positions and the index of the first
    generated token."""
    prompt = text if isinstance(text, Prompt) else prepare(model, text, chat=chat)
    options = {}
    if sampling is not None:
        sampling.check()
        torch.manual_seed(sampling.seed)
        options = sampling.generate_kwargs()
    with model.trace() as tr:
        ids = tr.generate(prompt.ids, max_new_tokens=max_new_tokens, **options).cpu()
    generated = int(ids.shape[1]) - prompt.length
    full = Prompt(ids, prompt.tokens + model.tokens(ids[0, prompt.length:]), prompt.template + [False] * generated)
    return token_view(model, full, k=k), prompt.length
