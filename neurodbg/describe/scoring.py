"""Scoring: the Pearson correlation between simulated and true activations over
all held-out tokens concatenated (top exemplars not shown to the explainer,
plus the random sequences), as OpenAI's and Transluce's pipelines do."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurodbg.describe.exemplars import Excerpt


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r; None when either side is constant (r is undefined)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def score(predictions: Sequence[np.ndarray], excerpts: Sequence[Excerpt]) -> float | None:
    """predictions[i] holds one value per token of excerpts[i]; position `start`
    onwards counts (the attention-sink position is excluded, as in the scan)."""
    if not excerpts:
        return None
    sim = np.concatenate([p[e.start:] for p, e in zip(predictions, excerpts, strict=True)])
    true = np.concatenate([e.acts[e.start:] for e in excerpts])
    return pearson(sim, true)
