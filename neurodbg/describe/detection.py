"""Detection and fuzzing scores, as in EleutherAI's delphi, read off a simulator's predictions.

Both ask whether a description tells the neuron's behaviour apart, on the same
held-out excerpts the simulation score uses (never the shown ones):

- detection: can the description tell activating excerpts from non-activating
  ones? An excerpt is activating when its true peak reaches `STRONG` × the
  highest true value among the held-out excerpts; the description's evidence
  for an excerpt is the largest value it predicts there.
- fuzzing: can it tell correctly highlighted tokens from wrongly highlighted
  ones? In each activating excerpt the correct highlight is the tokens at or
  above `STRONG` × the excerpt's peak; the wrong one as many other tokens drawn
  at random (seeded); the evidence is the mean predicted value over a highlight.

Each is reported as AUROC (0.5: chance) and balanced accuracy at a threshold
halfway between the lowest and highest evidence (chosen without the labels).
`shuffled` scores the same way with another neuron's description, so a number
can be read against what an unrelated description gets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from neurodbg.describe.exemplars import Excerpt
from neurodbg.describe.scoring import score as simulation_score

STRONG = 0.5
METHODS = ("simulation", "detection", "fuzzing")


def auroc(evidence: np.ndarray, labels: np.ndarray) -> float | None:
    """Probability that a positive outranks a negative (ties count half); None without both classes."""
    pos, neg = evidence[labels], evidence[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def balanced_accuracy(evidence: np.ndarray, labels: np.ndarray) -> float | None:
    if labels.all() or not labels.any():
        return None
    threshold = (evidence.min() + evidence.max()) / 2
    said = evidence > threshold if evidence.max() > evidence.min() else np.zeros(len(evidence), dtype=bool)
    return float((said[labels].mean() + (~said[~labels]).mean()) / 2)


def _pair(evidence: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    a, b = auroc(evidence, labels), balanced_accuracy(evidence, labels)
    return {"auroc": None if a is None else round(a, 4), "balanced_accuracy": None if b is None else round(b, 4)}


def detection(predictions: Sequence[np.ndarray], excerpts: Sequence[Excerpt]) -> dict[str, float | None]:
    peaks = np.array([e.acts[e.start:].max() if len(e.acts) > e.start else -np.inf for e in excerpts])
    top = peaks.max() if len(peaks) else 0.0
    if not len(peaks) or top <= 0:
        return {"auroc": None, "balanced_accuracy": None}
    labels = peaks >= STRONG * top
    evidence = np.array([p[e.start:].max() if len(p) > e.start else 0.0
                         for p, e in zip(predictions, excerpts, strict=True)])
    return _pair(evidence, labels)


def fuzzing(predictions: Sequence[np.ndarray], excerpts: Sequence[Excerpt], *, seed: int = 0
            ) -> dict[str, float | None]:
    rng = np.random.default_rng(seed)
    peaks = [e.acts[e.start:].max() if len(e.acts) > e.start else -np.inf for e in excerpts]
    top = max(peaks, default=0.0)
    evidence, labels = [], []
    for p, e, peak in zip(predictions, excerpts, peaks, strict=True):
        if top <= 0 or peak < STRONG * top:
            continue                                     # only activating excerpts are highlighted
        acts, pred = e.acts[e.start:], p[e.start:]
        right = np.flatnonzero(acts >= STRONG * peak)
        others = np.flatnonzero(acts < STRONG * peak)
        if len(others) < len(right):
            continue
        wrong = rng.choice(others, len(right), replace=False)
        evidence += [float(pred[right].mean()), float(pred[wrong].mean())]
        labels += [True, False]
    if not labels:
        return {"auroc": None, "balanced_accuracy": None}
    return _pair(np.array(evidence), np.array(labels))


def score_methods(predictions: Sequence[np.ndarray], excerpts: Sequence[Excerpt], methods: Sequence[str], *,
               seed: int = 0) -> dict[str, Any]:
    """{method: ...} for the chosen methods: simulation is Pearson r, the others AUROC + balanced accuracy."""
    out: dict[str, Any] = {}
    if "simulation" in methods:
        r = simulation_score(predictions, excerpts)
        out["simulation"] = r
    if "detection" in methods:
        out["detection"] = detection(predictions, excerpts)
    if "fuzzing" in methods:
        out["fuzzing"] = fuzzing(predictions, excerpts, seed=seed)
    return out
