"""The statistical simulator: turns a statistical explanation's spec back into
per-token predictions (token weight, else class weight, else baseline; a token
right after the named context token counts at least that context's weight)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurodbg.describe.exemplars import Excerpt
from neurodbg.describe.explanation import Explanation
from neurodbg.describe.stat_explainer import Background
from neurodbg.describe.token_classes import TOKEN_CLASSES


class StatisticalSimulator:
    name = "stat"

    def __init__(self, background: Background) -> None:
        self.bg = background

    def simulate(self, explanation: Explanation, excerpts: Sequence[Excerpt]) -> list[np.ndarray]:
        spec = explanation.spec
        if spec is None:
            raise ValueError(f"{explanation.id}: the statistical simulator needs a statistical explanation (spec)")
        vocab = len(self.bg.frequencies)
        table = np.full(vocab, float(spec.get("baseline", 0.0)))
        cls = spec.get("class")
        if cls in TOKEN_CLASSES:
            table[self.bg.classes == list(TOKEN_CLASSES).index(cls)] = float(spec.get("class_weight", 0.0))
        for token, weight in spec.get("tokens", {}).items():
            if 0 <= int(token) < vocab:
                table[int(token)] = float(weight)
        after = spec.get("after")
        out = []
        for e in excerpts:
            ids = np.clip(e.ids, 0, vocab - 1)
            pred = table[ids].copy()
            if after is not None and len(ids) > 1:
                follows = np.r_[False, e.ids[:-1] == int(after)]
                pred[follows] = np.maximum(pred[follows], float(spec.get("after_weight", 0.0)))
            out.append(pred)
        return out
