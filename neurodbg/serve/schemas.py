"""Request bodies. Field bounds are the hard caps that the OpenAPI schema states;
a server started with tighter `Limits` checks those as well."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurodbg.analyze.steering import SteeringSpec
from neurodbg.serve.limits import Limits

CAPS = Limits()


class Strict(BaseModel):
    # Python's JSON reads NaN, Infinity and -Infinity; no field of any request may hold one
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=CAPS.max_prompt_chars)


class PromptInput(Strict):
    """Exactly one of: plain text (optionally through the chat template), a conversation,
    or token ids (as the chat stream returned them, with their template flags)."""
    text: str | None = Field(default=None, max_length=CAPS.max_prompt_chars)
    chat: bool = False
    messages: list[Message] | None = Field(default=None, min_length=1, max_length=64)
    ids: list[int] | None = Field(default=None, min_length=1, max_length=4096)
    template: list[bool] | None = Field(default=None, max_length=4096)

    @model_validator(mode="after")
    def _one_source(self) -> PromptInput:
        given = [name for name in ("text", "messages", "ids") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of text, messages or ids")
        if self.template is not None and self.ids is None:
            raise ValueError("template flags go with ids")
        return self


class TokensRequest(Strict):
    input: PromptInput
    k: int = Field(default=5, ge=1, le=20)


class ChatRequest(Strict):
    """The next turn after a conversation (messages), or a plain continuation of text or ids."""
    input: PromptInput
    max_new_tokens: int = Field(default=64, ge=1, le=CAPS.max_new_tokens)
    k: int = Field(default=5, ge=1, le=20)


class AnalyzeRequest(Strict):
    input: PromptInput
    position: int | None = Field(default=None, ge=-4096, le=4096)
    target: str | None = Field(default=None, max_length=200)
    target_id: int | None = Field(default=None, ge=0)
    mode: Literal["attribution", "activation"] = "attribution"
    top: int = Field(default=100, ge=1, le=CAPS.max_neurons)
    rank: Literal["abs", "pos", "neg"] = "abs"
    include_template: bool = False
    threshold: float = Field(default=0.6, gt=0, le=2)
    min_cluster: int = Field(default=3, ge=1, le=100)


class SteerPreviewRequest(Strict):
    spec: SteeringSpec


class SteerRequest(Strict):
    input: PromptInput
    spec: SteeringSpec | None = None
    interventions: dict[str, Any] | list[dict[str, Any]] | None = None   # a saved spec, as the CLI writes it
    target: str | None = Field(default=None, max_length=200)
    target_id: int | None = Field(default=None, ge=0)
    max_new_tokens: int = Field(default=20, ge=1, le=CAPS.max_new_tokens)

    @model_validator(mode="after")
    def _one_source(self) -> SteerRequest:
        if (self.spec is None) == (self.interventions is None):
            raise ValueError("give exactly one of spec or interventions")
        return self


class RouteRequest(Strict):
    input: PromptInput


class LensRequest(Strict):
    input: PromptInput
    position: int | None = Field(default=None, ge=-4096, le=4096)
    target: str | None = Field(default=None, max_length=200)
    target_id: int | None = Field(default=None, ge=0)
    k: int = Field(default=5, ge=1, le=20)


class AttentionRequest(Strict):
    input: PromptInput
    layer: int = Field(ge=0, le=1000)


class VisionTraceRequest(Strict):
    """An uploaded image (base64 of the file's bytes) traced at one site of the vision model."""
    image: str = Field(min_length=1, max_length=(CAPS.max_image_bytes * 4) // 3 + 8)
    site: str = Field(default="logits", min_length=1, max_length=200)
    top: int = Field(default=16, ge=1, le=64)


class VisionMaximizeRequest(Strict):
    site: str = Field(min_length=1, max_length=200)
    channel: int = Field(ge=0, le=1_000_000)
    steps: int = Field(default=128, ge=1, le=CAPS.max_maximize_steps)
