"""A prompt as the analyses see it: token ids, readable tokens, and which positions
are chat-template scaffolding rather than the user's text."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neurodbg.errors import NeurodbgError, PromptError
from neurodbg.model import Model


@dataclass
class Prompt:
    ids: torch.Tensor           # [1, T]
    tokens: list[str]
    template: list[bool]        # True where a position belongs to the chat template

    @property
    def length(self) -> int:
        return int(self.ids.shape[1])

    def position(self, index: int | None) -> int:
        """A position given as absolute or negative (from the end); None -> the last."""
        if index is None:
            return self.length - 1
        pos = index + self.length if index < 0 else index
        if not 0 <= pos < self.length:
            raise PromptError(f"position {index} is outside the prompt (0-{self.length - 1}, or -1 to "
                              f"-{self.length})")
        return pos


def prepare(model: Model, text: str, *, chat: bool = False) -> Prompt:
    ids = model.encode(text, chat=chat)
    tokens = model.tokens(ids[0])
    template = [False] * len(tokens)
    if chat:
        template = _template_mask(model, text, ids)
    return Prompt(ids, tokens, template)


def _template_mask(model: Model, text: str, ids: torch.Tensor) -> list[bool]:
    """Template positions: those whose characters lie outside the user's message in the rendered chat."""
    tok = model.tokenizer
    rendered = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                       tokenize=False)
    start = rendered.rfind(text)
    enc = tok(rendered, return_offsets_mapping=True, add_special_tokens=False)
    if start < 0 or len(enc["input_ids"]) != ids.shape[1]:
        return [False] * int(ids.shape[1])    # cannot tell: treat every position as the user's
    end = start + len(text)
    return [not (a >= start and b <= end and b > a) for a, b in enc["offset_mapping"]]


def single_token(model: Model, target: str) -> int:
    """The id of `target`, which must be exactly one token (e.g. ' bigger')."""
    if model.tokenizer is None:
        raise NeurodbgError(f"{model.name} has no tokenizer")
    if not target:
        raise PromptError("the target token is empty")
    ids = model.tokenizer.encode(target, add_special_tokens=False)
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        raise PromptError(f"the target {target!r} is {len(ids)} tokens ({pieces}); give a single token, e.g. "
                          f"{pieces[0]!r}" if pieces else f"the target {target!r} tokenises to nothing")
    return int(ids[0])
