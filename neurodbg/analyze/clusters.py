"""Group neurons into concepts by the meaning of their descriptions.

Agglomerative clustering (scipy, average linkage, cosine distance, cut at a
threshold: 0.6 by default) of the description embeddings; clusters with fewer
than `min_size` members are dropped. Each cluster is labelled without any hosted
API by the description nearest its centroid, and scored for coherence by the
mean pairwise cosine similarity of its members."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from neurodbg.errors import NeurodbgError


@dataclass
class Cluster:
    label: str
    coherence: float
    members: list[int]                  # indices into the clustered items
    total: float = 0.0                  # sum of the members' values (e.g. attributions)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, ids: list[str] | None = None) -> dict[str, Any]:
        out = {"label": self.label, "coherence": round(self.coherence, 4), "size": len(self.members),
               "total": round(self.total, 6), "members": self.members, **self.extra}
        if ids is not None:
            out["ids"] = [ids[i] for i in self.members]
        return out


def cluster(vectors: np.ndarray, texts: list[str], values: list[float] | None = None, *, threshold: float = 0.6,
            min_size: int = 3) -> list[Cluster]:
    """vectors [n, dim] unit embeddings; returns clusters, largest |total| first."""
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
    out = []
    for label in np.unique(labels):
        members = index[labels == label]
        if len(members) < min_size:
            continue
        v = vectors[members].astype(np.float64)
        centroid = v.mean(0)
        nearest = int(members[int(np.argmax(v @ centroid))])
        sims = v @ v.T
        coherence = float((sims.sum() - np.trace(sims)) / (len(members) * (len(members) - 1)))
        out.append(Cluster(texts[nearest], coherence, [int(m) for m in members],
                           float(sum(values[m] for m in members))))
    out.sort(key=lambda c: (-abs(c.total), -len(c.members)))
    return out
