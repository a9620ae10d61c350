"""The statistical simulator: turns a statistical explanation's spec (the additive
token-and-context model of `token_model`) back into per-token predictions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurodbg.describe import token_model
from neurodbg.describe.exemplars import Excerpt
from neurodbg.describe.explanation import Explanation
from neurodbg.describe.stat_explainer import Background


class StatisticalSimulator:
    name = "stat"

    def __init__(self, background: Background) -> None:
        self.bg = background

    def simulate(self, explanation: Explanation, excerpts: Sequence[Excerpt]) -> list[np.ndarray]:
        if explanation.spec is None:
            raise ValueError(f"{explanation.id}: the statistical simulator needs a statistical explanation (spec)")
        model = token_model.tables(explanation.spec, self.bg.vocab)
        return [token_model.predict(model, e.ids) for e in excerpts]
