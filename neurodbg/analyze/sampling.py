"""Sampling settings for generation (temperature, top-k, top-p, seed), checked once and
applied the way transformers' `generate` applies them: its own logits warpers, in its
order (temperature, then top-k, then top-p), then one draw from the global generator
seeded with `seed`. A token-by-token loop using `warp` and `draw` therefore picks the
same tokens as `generate(do_sample=True, ...)` after `torch.manual_seed(seed)`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from neurodbg.errors import NeurodbgError


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_k: int = 50          # 0: off
    top_p: float = 0.95      # 1: off
    seed: int = 0

    def check(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise NeurodbgError(f"the temperature must be a positive number, not {self.temperature}")
        if self.top_k < 0:
            raise NeurodbgError(f"top_k must be 0 (off) or more, not {self.top_k}")
        if not (0 < self.top_p <= 1):
            raise NeurodbgError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.seed < 0:
            raise NeurodbgError(f"the seed must be 0 or more, not {self.seed}")

    def generate_kwargs(self) -> dict[str, Any]:
        return {"do_sample": True, "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}

    def warp(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """[batch, vocab] scores after the warpers `generate` would add for these settings."""
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        scores = logits.float()
        if self.temperature != 1.0:
            scores = TemperatureLogitsWarper(self.temperature)(input_ids, scores)
        if self.top_k != 0:
            scores = TopKLogitsWarper(self.top_k)(input_ids, scores)
        if self.top_p < 1.0:
            scores = TopPLogitsWarper(self.top_p)(input_ids, scores)
        return scores

    @staticmethod
    def draw(scores: torch.Tensor) -> torch.Tensor:
        """[batch] tokens drawn from the warped scores (the global generator, as `generate` draws)."""
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
