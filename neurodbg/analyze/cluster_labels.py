"""Optional LLM labels for clusters, through the explainer chat backends
(`local:MODEL` or `openai:MODEL`); the default label needs no language model."""

from __future__ import annotations

import os
from typing import Any

from neurodbg.analyze.clusters import Cluster
from neurodbg.describe.llm_prompt import clean
from neurodbg.errors import NeurodbgError

PROMPT = ("These are descriptions of neurons in a language model that form one group:\n{items}\n\n"
          "Name the concept they share in two to six words. Answer with the name only.")


def chat_backend(spec: str, *, api_base: str | None = None, api_key: str | None = None) -> Any:
    from neurodbg.describe.chat_backends import LocalChat, OpenAIChat

    kind, _, name = spec.partition(":")
    if kind == "local" and name:
        return LocalChat(name)
    if kind == "openai" and name:
        base = api_base or os.environ.get("NEURODBG_OPENAI_BASE_URL") or os.environ.get(
            "OPENAI_BASE_URL") or "https://api.openai.com/v1"
        key = api_key or os.environ.get("NEURODBG_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        return OpenAIChat(name, base, key)
    raise NeurodbgError(f"unknown label backend {spec!r}; choose local:MODEL or openai:MODEL")


def llm_labels(clusters: list[Cluster], texts: list[str], backend: Any, *, max_items: int = 10) -> None:
    """Put an LLM label in each cluster's `extra['llm_label']` (the default label stays)."""
    for c in clusters:
        items = "\n".join(f"- {texts[i].split(' Promotes ')[0]}" for i in c.members[:max_items])
        reply = backend.chat([{"role": "user", "content": PROMPT.format(items=items)}], n=1, temperature=0.0)
        c.extra["llm_label"] = clean(reply[0]) if reply else None
