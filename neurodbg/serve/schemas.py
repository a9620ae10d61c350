"""Request bodies. Field bounds are the hard caps that the OpenAPI schema states;
a server started with tighter `Limits` checks those as well."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurodbg.analyze.consistency import MAX_SAMPLES
from neurodbg.analyze.embedding_map import MAX_ITEMS
from neurodbg.analyze.sampling import Sampling
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


class SamplingInput(Strict):
    """Sampling settings for a generation; the same defaults as `Sampling`."""
    temperature: float = Field(default=0.7, gt=0, le=10)
    top_k: int = Field(default=50, ge=0, le=100_000)
    top_p: float = Field(default=0.95, gt=0, le=1)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)

    def settings(self) -> Sampling:
        return Sampling(self.temperature, self.top_k, self.top_p, self.seed)


class ChatRequest(Strict):
    """The next turn after a conversation (messages), or a plain continuation of text or ids."""
    input: PromptInput
    max_new_tokens: int = Field(default=64, ge=1, le=CAPS.max_new_tokens)
    k: int = Field(default=5, ge=1, le=20)
    sampling: SamplingInput | None = None       # absent: greedy


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
    min_coherence: float | None = Field(default=None, ge=0, le=1)


Specs = SteeringSpec | list[SteeringSpec]      # one spec, or several run together (e.g. suppress + boost)


def spec_list(spec: Specs) -> list[SteeringSpec]:
    return spec if isinstance(spec, list) else [spec]


class SteerPreviewRequest(Strict):
    spec: Specs

    @model_validator(mode="after")
    def _some(self) -> SteerPreviewRequest:
        if not 1 <= len(spec_list(self.spec)) <= 8:
            raise ValueError("spec: give 1 to 8 steering specs")
        return self


class SteerRequest(Strict):
    input: PromptInput
    spec: Specs | None = None
    interventions: dict[str, Any] | list[dict[str, Any]] | None = None   # a saved spec, as the CLI writes it
    target: str | None = Field(default=None, max_length=200)
    target_id: int | None = Field(default=None, ge=0)
    max_new_tokens: int = Field(default=20, ge=1, le=CAPS.max_new_tokens)

    @model_validator(mode="after")
    def _one_source(self) -> SteerRequest:
        if (self.spec is None) == (self.interventions is None):
            raise ValueError("give exactly one of spec or interventions")
        if self.spec is not None and not 1 <= len(spec_list(self.spec)) <= 8:
            raise ValueError("spec: give 1 to 8 steering specs")
        return self


class RouteRequest(Strict):
    input: PromptInput


class LensRequest(Strict):
    input: PromptInput
    position: int | None = Field(default=None, ge=-4096, le=4096)
    target: str | None = Field(default=None, max_length=200)
    target_id: int | None = Field(default=None, ge=0)
    k: int = Field(default=5, ge=1, le=20)
    tuned: bool = False                         # the tuned lens the server was started with


class ConsistencyRequest(Strict):
    input: PromptInput
    samples: int = Field(default=10, ge=1, le=MAX_SAMPLES)
    extract: str = Field(default="number", min_length=1, max_length=200)
    sampling: SamplingInput = Field(default_factory=SamplingInput)
    max_new_tokens: int = Field(default=32, ge=1, le=CAPS.max_new_tokens)
    triage: float | None = Field(default=None, gt=0, le=1)
    fork_neurons: int = Field(default=20, ge=0, le=CAPS.max_neurons)


class EmbeddingsRequest(Strict):
    items: list[str] = Field(min_length=2, max_length=MAX_ITEMS)
    kind: Literal["token", "contextual"] = "token"
    layer: int | None = Field(default=None, ge=0, le=1000)
    method: Literal["pca", "tsne", "umap"] = "pca"
    neighbours: int = Field(default=5, ge=0, le=50)

    @model_validator(mode="after")
    def _items(self) -> EmbeddingsRequest:
        for item in self.items:
            if not item.strip() or len(item) > 1000:
                raise ValueError("each item is a non-empty word or word@sentence of at most 1000 characters")
        return self


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
