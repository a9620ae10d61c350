"""Optional LLM labels and ratings for clusters, through the explainer chat backends
(`local:MODEL` or `openai:MODEL`); the default label needs no language model.

As in the seeds (Transluce's Monitor): the LLM names the concept the members share
and rates how alike they are from 1 (most alike) to 7; the Monitor shows only
clusters of >= 3 rated <= 3 (`Monitor.analyze(max_rating=3)`)."""

from __future__ import annotations

import re
from typing import Any

from neurodbg.analyze.clusters import Cluster
from neurodbg.describe.llm_prompt import clean
from neurodbg.errors import NeurodbgError

PROMPT = ("These are descriptions of neurons in a language model that form one group:\n{items}\n\n"
          "Name the concept they share in two to six words. Answer with the name only.")
RATING_PROMPT = ("These are descriptions of neurons in a language model that were grouped together:\n{items}\n\n"
                 "How alike are they in meaning, from 1 (all describe the same concept) to 7 (unrelated)? "
                 "Answer with one digit.")


def chat_backend(spec: str, *, api_base: str | None = None, api_key: str | None = None) -> Any:
    from neurodbg.describe.chat_backends import open_chat

    backend = open_chat(spec, api_base=api_base, api_key=api_key)
    if backend is None:
        raise NeurodbgError(f"unknown label backend {spec!r}; choose local:MODEL or openai:MODEL")
    return backend


def rating(reply: str) -> int | None:
    """The first digit 1-7 of a reply; None when there is none (the cluster stays unrated)."""
    found = re.search(r"[1-7]", reply)
    return int(found.group()) if found else None


def llm_labels(clusters: list[Cluster], texts: list[str], backend: Any, *, max_items: int = 10) -> None:
    """Put an LLM label in each cluster's `extra['llm_label']` (the default label stays) and the LLM's
    1-7 similarity rating in `extra['rating']`."""
    for c in clusters:
        items = "\n".join(f"- {texts[i].split(' Promotes ')[0]}" for i in c.members[:max_items])
        reply = backend.chat([{"role": "user", "content": PROMPT.format(items=items)}], n=1, temperature=0.0)
        c.extra["llm_label"] = clean(reply[0]) if reply else None
        reply = backend.chat([{"role": "user", "content": RATING_PROMPT.format(items=items)}], n=1, temperature=0.0)
        c.extra["rating"] = rating(reply[0]) if reply else None
