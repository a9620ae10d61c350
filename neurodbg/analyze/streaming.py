"""Generation one token at a time, for a chat that shows tokens as they come. A
plain key-value-cache loop: greedy (argmax of each step's logits) or, with a
`Sampling`, seeded sampling through transformers' own warpers, so it yields the
same tokens as the model's own `generate` with the same settings (tests check
both), and each step's top-k next-token probabilities come for free."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from neurodbg.analyze.prompt import Prompt
from neurodbg.analyze.sampling import Sampling
from neurodbg.model import Model


@dataclass
class StreamedToken:
    index: int                                   # position in prompt + generated tokens
    id: int
    token: str
    prob: float                                  # its probability when it was chosen
    top: list[tuple[str, int, float]]            # the top-k at that step (what the model weighed)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "token": self.token, "prob": round(self.prob, 6),
                "top": [{"token": t, "id": i, "prob": round(p, 6)} for t, i, p in self.top]}


def stop_ids(model: Model) -> set[int]:
    """Token ids that end a reply: the tokenizer's EOS and the generation config's."""
    out: set[int] = set()
    tok = model.tokenizer
    if tok is not None and tok.eos_token_id is not None:
        out.add(int(tok.eos_token_id))
    config = getattr(model.module, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int):
        out.add(eos)
    elif isinstance(eos, list):
        out.update(int(e) for e in eos)
    return out


@torch.no_grad()
def stream_tokens(model: Model, prompt: Prompt, *, max_new_tokens: int = 64, k: int = 5,
                  sampling: Sampling | None = None, cancelled: Callable[[], bool] = lambda: False
                  ) -> Iterator[StreamedToken]:
    """Yield each generated token as soon as it is chosen (greedy, or drawn with `sampling` after
    seeding the global generator with its seed); stop at EOS, the limit, or when `cancelled()`.
    `prob` and `top` are the model's own probabilities, before any warping."""
    assert model.tokenizer is not None
    if sampling is not None:
        sampling.check()
        torch.manual_seed(sampling.seed)
    seen = prompt.ids.to(model.device)
    stops = stop_ids(model)
    ids = prompt.ids.to(model.device)
    # the key-value cache: `cache` in transformers 5, `past_key_values` before
    cache_arg = "cache" if "cache" in inspect.signature(model.module.forward).parameters else "past_key_values"
    past: Any = None
    for step in range(max_new_tokens):
        if cancelled():
            return
        out = model.module(input_ids=ids, use_cache=True, **{cache_arg: past})
        past = out[cache_arg]
        probs = torch.softmax(out.logits[0, -1].float(), dim=-1)
        if sampling is None:
            chosen = int(torch.argmax(out.logits[0, -1]))
        else:
            chosen = int(sampling.draw(sampling.warp(seen, out.logits[:, -1]))[0])
        top = probs.topk(k)
        entries = [(model.tokenizer.decode([int(i)]), int(i), float(p))
                   for i, p in zip(top.indices, top.values, strict=True)]
        yield StreamedToken(prompt.length + step, chosen, model.tokenizer.decode([chosen]), float(probs[chosen]),
                            entries)
        if chosen in stops:
            return
        ids = torch.tensor([[chosen]], device=model.device)
        seen = torch.cat([seen, ids], dim=1)
