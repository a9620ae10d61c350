"""Chat backends for LLM explainers: a local Hugging Face instruct model, or any
OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, `transformers
serve`, OpenAI)."""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from neurodbg.errors import ExplainerError


class LocalChat:
    def __init__(self, model: str | Any = "default", *, device: str | None = None, max_new_tokens: int = 48) -> None:
        from neurodbg.model import Model
        from neurodbg.models.loader import load_model

        self.model: Model = model if isinstance(model, Model) else load_model(model, device=device, progress=False)
        if self.model.tokenizer is None or getattr(self.model.tokenizer, "chat_template", None) is None:
            raise ExplainerError(f"{self.model.name} has no chat template; a local explainer needs an instruct model")
        self.name = f"local:{self.model.name}"
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def chat(self, messages: list[dict[str, str]], *, n: int = 1, temperature: float = 0.7,
             seed: int = 0) -> list[str]:
        tok = self.model.tokenizer
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        input_ids = ids["input_ids"].to(self.model.device)
        torch.manual_seed(seed)   # reproducible candidates
        out = self.model.module.generate(  # type: ignore[operator]
            input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=self.max_new_tokens,
            do_sample=n > 1 or temperature > 0, temperature=max(temperature, 1e-3), num_return_sequences=n,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        return [tok.decode(row[input_ids.shape[1]:], skip_special_tokens=True) for row in out]


class OpenAIChat:
    def __init__(self, model: str, base_url: str, api_key: str | None = None, *, timeout: float = 60.0,
                 max_tokens: int = 64) -> None:
        self.model_name, self.base_url = model, base_url.rstrip("/")
        self.api_key, self.timeout, self.max_tokens = api_key, timeout, max_tokens
        self.name = f"openai:{model}"

    def chat(self, messages: list[dict[str, str]], *, n: int = 1, temperature: float = 0.7,
             seed: int = 0) -> list[str]:
        return [self._one(messages, temperature, seed + i) for i in range(n)]   # not every server supports n

    def _one(self, messages: list[dict[str, str]], temperature: float, seed: int) -> str:
        import httpx

        url = f"{self.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.model_name, "messages": messages, "temperature": temperature,
                "max_tokens": self.max_tokens, "seed": seed, "stream": False}
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=self.timeout)
        except httpx.TimeoutException:
            raise ExplainerError(f"{url} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise ExplainerError(f"cannot reach {url}: {exc}") from None
        if response.status_code >= 400:
            raise ExplainerError(f"{url} answered HTTP {response.status_code}: {response.text[:200]!r}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise ExplainerError(f"{url} answered something that is not an OpenAI chat completion: "
                                 f"{response.text[:200]!r}") from None
        if not isinstance(content, str):
            raise ExplainerError(f"{url} answered a chat completion without text content")
        return content


def open_chat(spec: str, *, api_base: str | None = None, api_key: str | None = None, timeout: float = 60.0,
              device: str | None = None) -> LocalChat | OpenAIChat | None:
    """`local:MODEL` or `openai:MODEL` -> a chat backend; None for anything else. The OpenAI
    endpoint and key default to NEURODBG_OPENAI_BASE_URL / NEURODBG_OPENAI_API_KEY, then OPENAI_*."""
    kind, _, name = spec.partition(":")
    if not name:
        return None
    if kind == "local":
        return LocalChat(name, device=device)
    if kind == "openai":
        base = api_base or os.environ.get("NEURODBG_OPENAI_BASE_URL") or os.environ.get(
            "OPENAI_BASE_URL") or "https://api.openai.com/v1"
        key = api_key or os.environ.get("NEURODBG_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        return OpenAIChat(name, base, key, timeout=timeout)
    return None
