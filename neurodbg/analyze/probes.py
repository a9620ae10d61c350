"""Linear probes: where does a concept live? A labelled prompt set goes through the
model once (one forward per prompt, every probed site captured at the prompt's last
token, or averaged over its tokens with `position="mean"`); then per site:

- accuracy: the mean accuracy of `StandardScaler → RidgeClassifier()` (scikit-learn;
  closed-form, so 30 layers × 5 folds fit in well under the time of the forward passes;
  `classifier="logistic"`: `LogisticRegression(max_iter=1000)`, the conventional probe,
  ~50x slower to fit) over stratified `folds`-fold cross-validation (shuffled, `seed`);
  `chance` is the largest class's share;
- separation: the mean distance between class means over the root-mean-square
  distance of prompts to their class mean (0: the classes sit on top of each other;
  above ~1 they stand apart);
- the best layer: the highest accuracy (ties: the larger separation, then the earlier).

At the best layer the mean difference (positive class − the others) is exported as an
`add_vector` intervention, and its effect measured: on prompts of the other classes,
the share a probe of the last probed site (fitted on every prompt) calls positive,
without and with the vector added at every token."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from neurodbg.analyze.probe_data import ProbeData
from neurodbg.errors import ProbeDataError
from neurodbg.model import Model
from neurodbg.progress import RateProgress
from neurodbg.trace.interventions import AddVector, dumps

Position = Literal["last", "mean"]
Classifier = Literal["logistic", "ridge"]


@dataclass
class LayerProbe:
    site: str
    layer: int | None
    accuracy: float
    accuracy_std: float
    separation: float


@dataclass
class ProbeEffect:
    site: str
    positive: str
    prompts: int
    positive_share_before: float
    positive_share_after: float
    mean_probability_before: float
    mean_probability_after: float


@dataclass
class ProbeReport:
    model: str
    data: str
    position: str
    classes: list[str]
    counts: dict[str, int]
    folds: int
    chance: float
    layers: list[LayerProbe]
    best: LayerProbe
    direction: list[float] = field(repr=False)
    effect: ProbeEffect | None = None

    def intervention(self, scale: float = 1.0) -> AddVector:
        return AddVector(site=self.best.site, vector=self.direction, scale=scale)

    def direction_json(self) -> str:
        """The best layer's direction as a saved intervention list (`--intervene`, the web app's Load JSON)."""
        return dumps([self.intervention()])

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "direction"}
        out["best_layer"] = self.best.layer
        out["direction_norm"] = float(np.linalg.norm(self.direction))
        return out

    def figure(self, path: str | Path) -> Path:
        from neurodbg.viz.probes import probe_curve

        return probe_curve(self, Path(path))


@torch.no_grad()
def prompt_features(model: Model, texts: list[str], sites: list[str], *, position: Position = "last",
                    progress: bool = True, interventions: list[AddVector] | None = None) -> dict[str, np.ndarray]:
    """Each site's activation at each prompt's last token (or its mean over the prompt's tokens):
    {site: [prompts, width]} (float32)."""
    rows: dict[str, list[np.ndarray]] = {site: [] for site in sites}
    with RateProgress(progress, "probing", len(texts), unit="prompts") as bar:
        for text in texts:
            with model.trace(capture=sites, interventions=interventions or (), reduce=position) as tr:
                tr.forward(text)
            for site in sites:
                rows[site].append(tr[site].reshape(-1).float().cpu().numpy())
            bar.advance(1)
    return {site: np.stack(values) for site, values in rows.items()}


def separation(x: np.ndarray, y: np.ndarray) -> float:
    """Mean distance between class means ÷ RMS distance of the rows to their class mean."""
    classes = np.unique(y)
    means = {c: x[y == c].mean(0) for c in classes}
    spread = math.sqrt(float(np.mean([np.square(x[y == c] - means[c]).sum(1).mean() for c in classes])))
    between = float(np.mean([np.linalg.norm(means[a] - means[b]) for a, b in combinations(classes, 2)]))
    return between / spread if spread > 0 else math.inf


def _pipeline(classifier: Classifier = "ridge") -> Any:
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000) if classifier == "logistic"
                         else RidgeClassifier())


def cross_validated(x: np.ndarray, y: np.ndarray, folds: int, seed: int,
                    classifier: Classifier = "ridge") -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    return np.asarray(cross_val_score(_pipeline(classifier), x, y,
                                      cv=StratifiedKFold(folds, shuffle=True, random_state=seed)))


def probe(model: Model, data: ProbeData, *, site: str = "layers.*.resid_out", folds: int = 5, seed: int = 0,
          positive: str | None = None, position: Position = "last", classifier: Classifier = "ridge",
          effect_prompts: int = 32, progress: bool = True) -> ProbeReport:
    sites = model.resolve(site)
    if not sites:
        raise ProbeDataError(f"{site} names no site of {model.name}")
    y = np.asarray(data.labels)
    smallest = min(data.counts().values())
    folds = max(2, min(folds, smallest))
    if positive is not None and positive not in data.classes:
        raise ProbeDataError(f"no class {positive!r} in {data.name}; its classes: {', '.join(data.classes)}")
    names = [s.name for s in sites]
    if position not in ("last", "mean"):
        raise ProbeDataError(f"position is last or mean, not {position!r}")
    if classifier not in ("logistic", "ridge"):
        raise ProbeDataError(f"the classifier is logistic or ridge, not {classifier!r}")
    features = prompt_features(model, data.texts, names, position=position, progress=progress)
    layers = []
    for s in sites:
        scores = cross_validated(features[s.name], y, folds, seed, classifier)
        layers.append(LayerProbe(s.name, s.layer, round(float(scores.mean()), 6), round(float(scores.std()), 6),
                                 round(separation(features[s.name], y), 6)))
    best = max(layers, key=lambda p: (p.accuracy, p.separation, -layers.index(p)))
    # binary sets point to the second class in sorted order (e.g. "math" over "chat"); others to the first
    pos = positive or (data.classes[-1] if len(data.classes) == 2 else data.classes[0])
    x = features[best.site]
    direction = (x[y == pos].mean(0) - x[y != pos].mean(0)).astype(np.float32)
    chance = max(data.counts().values()) / len(y)
    report = ProbeReport(model.name, data.name, position, data.classes, data.counts(), folds, round(chance, 6),
                         layers, best, direction.tolist())
    if effect_prompts > 0:
        report.effect = _effect(model, data, features[names[-1]], names[-1], report, pos, effect_prompts, position)
    return report


def _effect(model: Model, data: ProbeData, last: np.ndarray, last_site: str, report: ProbeReport, positive: str,
            count: int, position: Position) -> ProbeEffect:
    """The last site's probe (positive vs the rest) on other-class prompts, without and with the direction."""
    target = np.asarray([label == positive for label in data.labels])
    reader = _pipeline("logistic").fit(last, target)      # probabilities: a logistic reader whatever probed
    others = [t for t, label in zip(data.texts, data.labels, strict=True) if label != positive][:count]
    before = last[~target][:count]
    after = prompt_features(model, others, [last_site], position=position, progress=False,
                            interventions=[report.intervention()])[last_site]
    p_before, p_after = reader.predict_proba(before)[:, 1], reader.predict_proba(after)[:, 1]
    return ProbeEffect(report.best.site, positive, len(others), round(float((p_before > 0.5).mean()), 6),
                       round(float((p_after > 0.5).mean()), 6), round(float(p_before.mean()), 6),
                       round(float(p_after.mean()), 6))
