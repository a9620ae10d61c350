"""Tokenizer facts: vocabulary size, special tokens, compression on a text."""

from __future__ import annotations

import inspect
import json
import textwrap
from dataclasses import asdict, dataclass
from typing import Any


def sample_text() -> str:
    """English prose every Python install carries: docstrings of standard modules."""
    import argparse
    import collections
    import functools
    import logging
    import pathlib
    import unittest

    mods = (json, argparse, collections, functools, logging, pathlib, unittest)
    return "\n\n".join(textwrap.dedent(inspect.getdoc(m) or "") for m in mods)


@dataclass
class TokenizerFacts:
    vocab_size: int
    base_vocab_size: int
    special_tokens: dict[str, str]
    text_chars: int
    text_tokens: int
    chars_per_token: float
    bytes_per_token: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tokenizer_facts(tokenizer: Any, text: str | None = None) -> TokenizerFacts:
    text = text if text is not None else sample_text()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    n = max(len(ids), 1)
    specials = {k: str(v) for k, v in (tokenizer.special_tokens_map or {}).items() if isinstance(v, str)}
    return TokenizerFacts(
        vocab_size=len(tokenizer),
        base_vocab_size=int(getattr(tokenizer, "vocab_size", len(tokenizer))),
        special_tokens=specials,
        text_chars=len(text),
        text_tokens=len(ids),
        chars_per_token=round(len(text) / n, 3),
        bytes_per_token=round(len(text.encode()) / n, 3),
    )
