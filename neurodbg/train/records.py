"""A run's records, loaded once as series the diagnosis rules and plots read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from neurodbg.train.run_store import RunStore


@dataclass
class SiteSeries:
    name: str
    units: int
    steps: list[int] = field(default_factory=list)
    mean: list[float | None] = field(default_factory=list)
    std: list[float | None] = field(default_factory=list)
    dead: list[float | None] = field(default_factory=list)
    saturated: list[float | None] = field(default_factory=list)
    nonfinite: list[int] = field(default_factory=list)


@dataclass
class ParamSeries:
    name: str
    steps: list[int] = field(default_factory=list)
    grad_norm: list[float | None] = field(default_factory=list)     # None: not finite
    weight_norm: list[float | None] = field(default_factory=list)
    update_ratio: list[float | None] = field(default_factory=list)


@dataclass
class RouterSeries:
    """One MoE router's figures per recorded step (see `router_watch`)."""
    name: str
    experts: int
    top_k: int
    steps: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    counts: list[list[float]] = field(default_factory=list)     # routed slots per expert
    probs: list[list[float]] = field(default_factory=list)      # summed softmax probability per expert
    entropy: list[float | None] = field(default_factory=list)   # summed routing entropy (nats)

    def shares(self, start: int = 0, stop: int | None = None) -> list[float]:
        """Each expert's share of the routed slots, pooled over records [start, stop)."""
        pooled = [sum(column) for column in zip(*self.counts[start:stop], strict=True)] or [0.0] * self.experts
        total = sum(pooled)
        return [c / total if total else 0.0 for c in pooled]


@dataclass
class RunRecords:
    meta: dict[str, Any]
    scalars: dict[str, list[tuple[int, float | None]]]          # None: logged but not finite
    params: dict[str, ParamSeries]                              # in the model's parameter order
    sites: dict[str, SiteSeries]                                # in forward order
    recorded_steps: list[int]
    breaks: list[dict[str, Any]]
    routers: dict[str, RouterSeries] = field(default_factory=dict)     # in the order they first ran

    def series(self, key: str) -> list[tuple[int, float | None]]:
        return self.scalars.get(key, [])

    @property
    def steps_seen(self) -> int:
        last = max([s for s, _ in self.series("loss")] + self.recorded_steps + [-1])
        return last + 1


def load_records(store: RunStore) -> RunRecords:
    params: dict[str, ParamSeries] = {}
    order = store.meta().get("parameter_order") or []
    for name in order:
        params[name] = ParamSeries(name)
    for step, name, g, w, r in store.params():
        param = params.setdefault(name, ParamSeries(name))
        param.steps.append(step)
        param.grad_norm.append(g)
        param.weight_norm.append(w)
        param.update_ratio.append(r)
    sites: dict[str, SiteSeries] = {}
    for step, name, mean, std, dead, sat, bad, units in store.sites():
        site = sites.setdefault(name, SiteSeries(name, units))
        site.steps.append(step)
        site.mean.append(mean)
        site.std.append(std)
        site.dead.append(dead)
        site.saturated.append(sat)
        site.nonfinite.append(bad)
    routers: dict[str, RouterSeries] = {}
    for step, name, experts, top_k, tokens, counts, probs, entropy in store.routers():
        router = routers.setdefault(name, RouterSeries(name, experts, top_k))
        router.steps.append(step)
        router.tokens.append(tokens)
        router.counts.append(json.loads(counts))
        router.probs.append(json.loads(probs))
        router.entropy.append(entropy)
    return RunRecords(store.meta(), store.scalars(), {k: v for k, v in params.items() if v.steps}, sites,
                      [s for s, _ in store.steps()], store.breaks(), routers)
