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


def from_ids(model: Model, ids: list[int], template: list[bool] | None = None) -> Prompt:
    """A prompt from token ids (e.g. a conversation the web app streamed), checked against the vocabulary."""
    if model.tokenizer is None:
        raise NeurodbgError(f"{model.name} has no tokenizer")
    if not ids:
        raise PromptError("the prompt is empty")
    vocab = len(model.tokenizer)
    bad = next((i for i in ids if not 0 <= i < vocab), None)
    if bad is not None:
        raise PromptError(f"token id {bad} is outside the vocabulary (0-{vocab - 1})")
    limit = model.max_length
    if limit is not None and len(ids) > limit:
        raise PromptError(f"the prompt has {len(ids)} tokens; {model.name} accepts at most {limit}")
    if template is not None and len(template) != len(ids):
        raise PromptError(f"template has {len(template)} flags for {len(ids)} tokens")
    tensor = torch.tensor([ids], dtype=torch.long)
    return Prompt(tensor, model.tokens(tensor[0]), list(template) if template is not None else [False] * len(ids))


def prepare_messages(model: Model, messages: list[dict[str, str]]) -> Prompt:
    """A multi-turn conversation through the chat template, ready for the assistant's next turn.
    Template positions are those outside every message's text."""
    tok = model.tokenizer
    if tok is None:
        raise NeurodbgError(f"{model.name} has no tokenizer")
    if not messages or not any(m["content"].strip() for m in messages):
        raise PromptError("the conversation is empty")
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = tok(rendered, return_offsets_mapping=True, add_special_tokens=False)
    ids = enc["input_ids"]
    limit = model.max_length
    if limit is not None and len(ids) > limit:
        raise PromptError(f"the conversation has {len(ids)} tokens; {model.name} accepts at most {limit}")
    spans, cursor = [], 0
    for m in messages:       # each message's text, found in order in the rendered conversation
        start = rendered.find(m["content"], cursor)
        if start >= 0 and m["content"]:
            spans.append((start, start + len(m["content"])))
            cursor = start + len(m["content"])
    template = [not any(a >= s and b <= e and b > a for s, e in spans) for a, b in enc["offset_mapping"]]
    tensor = torch.tensor([ids], dtype=torch.long)
    return Prompt(tensor, model.tokens(tensor[0]), template)


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
