"""Group neurons into concepts by the meaning of their descriptions.

Agglomerative clustering (scipy, average linkage, cosine distance, cut at a
threshold: 0.6 by default) of the description embeddings (of each description's
input-side concept, `search.atlas_search.searchable`); clusters with fewer than
`min_size` members are dropped. Each cluster is labelled without any hosted API
by the description nearest its centroid, and scored:

- coherence: the mean pairwise cosine similarity of its members;
- baseline: the mean coherence of random groups of the same size drawn from the
  same neurons (what coherence means for these descriptions: short token lists
  are all somewhat alike);
- flags that make a cluster probably spurious (`reasons`): its coherence is not
  above the 95th percentile of those random groups (`not_above_random`), it is
  below `LOW_COHERENCE` (`low_coherence`), or its members' descriptions do not
  predict them — median score below `LOW_SCORE` (`low_scores`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from neurodbg.errors import NeurodbgError

LOW_COHERENCE = 0.5     # members this unlike share no concept worth a name
LOW_SCORE = 0.3         # descriptions scoring below this predict their neurons too poorly to group them by
RANDOM_DRAWS = 200      # random groups per cluster size for the baseline
REASONS = ("not_above_random", "low_coherence", "low_scores")


@dataclass
class Cluster:
    label: str
    coherence: float
    members: list[int]                  # indices into the clustered items
    total: float = 0.0                  # sum of the members' values (e.g. attributions)
    baseline: float | None = None       # mean coherence of random groups of the same size
    reasons: list[str] = field(default_factory=list)   # why it is probably spurious (REASONS); empty: it is not
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spurious(self) -> bool:
        return bool(self.reasons)

    def to_dict(self, ids: list[str] | None = None) -> dict[str, Any]:
        out = {"label": self.label, "coherence": round(self.coherence, 4), "size": len(self.members),
               "total": round(self.total, 6), "members": self.members,
               "baseline": None if self.baseline is None else round(self.baseline, 4),
               "spurious": self.spurious, "reasons": list(self.reasons), **self.extra}
        if ids is not None:
            out["ids"] = [ids[i] for i in self.members]
        return out


def coherence(vectors: np.ndarray) -> float:
    """Mean pairwise cosine similarity of unit vectors [m, dim], m >= 2."""
    v = vectors.astype(np.float64)
    sims = v @ v.T
    m = len(v)
    return float(np.clip((sims.sum() - np.trace(sims)) / (m * (m - 1)), -1.0, 1.0))   # float32 rows: 1 + 1e-7


def random_coherence(vectors: np.ndarray, size: int, *, draws: int = RANDOM_DRAWS, seed: int = 0) -> np.ndarray:
    """Coherence of `draws` random groups of `size` rows of `vectors` (seeded: the same input gives the same)."""
    rng = np.random.default_rng(seed)
    return np.array([coherence(vectors[rng.choice(len(vectors), size, replace=False)]) for _ in range(draws)])


def cluster(vectors: np.ndarray, texts: list[str], values: list[float] | None = None, *, threshold: float = 0.6,
            min_size: int = 3, scores: list[float | None] | None = None) -> list[Cluster]:
    """vectors [n, dim] unit embeddings; `scores` the descriptions' scores (for the `low_scores` flag).
    Returns clusters, largest |total| first."""
    n = len(texts)
    if vectors.shape[0] != n:
        raise NeurodbgError("one embedding per description is needed")
    if not 0 < threshold <= 2:
        raise NeurodbgError(f"the distance threshold must be in (0, 2] (got {threshold})")
    if n < max(min_size, 2):
        return []
    usable = np.linalg.norm(vectors, axis=1) > 0          # neurons without a description cannot be grouped
    index = np.flatnonzero(usable)
    if len(index) < max(min_size, 2):
        return []
    x = vectors[index].astype(np.float64)
    labels = fcluster(linkage(x, method="average", metric="cosine"), t=threshold, criterion="distance")
    values = list(values) if values is not None else [1.0] * n
    usable_vectors = vectors[index]
    by_size: dict[int, np.ndarray] = {}
    out = []
    for label in np.unique(labels):
        members = index[labels == label]
        if len(members) < min_size:
            continue
        v = vectors[members].astype(np.float64)
        centroid = v.mean(0)
        nearest = int(members[int(np.argmax(v @ centroid))])
        alike = coherence(v)
        size = len(members)
        if size not in by_size:
            by_size[size] = random_coherence(usable_vectors, size, seed=size)
        random = by_size[size]
        reasons = []
        if size < len(index) and alike <= float(np.percentile(random, 95)):
            reasons.append("not_above_random")
        if alike < LOW_COHERENCE:
            reasons.append("low_coherence")
        if scores is not None:
            known = [scores[m] for m in members if scores[m] is not None]
            if not known or float(np.median(known)) < LOW_SCORE:
                reasons.append("low_scores")
        out.append(Cluster(texts[nearest], alike, [int(m) for m in members],
                           float(sum(values[m] for m in members)), float(random.mean()), reasons))
    out.sort(key=lambda c: (-abs(c.total), -len(c.members)))
    return out
