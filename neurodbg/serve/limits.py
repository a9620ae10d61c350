"""What one request may ask of the server: sizes that keep a shared model responsive."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 256 * 1024       # any request body
    max_prompt_chars: int = 16_000         # text or one message
    max_prompt_tokens: int = 1024          # after tokenisation (and never above the model's own limit)
    max_new_tokens: int = 256              # per generation
    max_neurons: int = 300                 # neurons per analysis or steering query
    max_results: int = 200                 # search hits
    max_attention_tokens: int = 256        # attention maps are T x T per head
    max_image_bytes: int = 2 * 1024 * 1024   # an uploaded image, before base64 (the body limit grows to fit)
    max_maximize_steps: int = 256          # activation maximisation per request
    max_samples: int = 32                  # self-consistency samples per request
    max_map_items: int = 64                # words in one embedding map

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
