"""A run's records, loaded once as series the diagnosis rules and plots read."""

from __future__ import annotations

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
class RunRecords:
    meta: dict[str, Any]
    scalars: dict[str, list[tuple[int, float | None]]]          # None: logged but not finite
    params: dict[str, ParamSeries]                              # in the model's parameter order
    sites: dict[str, SiteSeries]                                # in forward order
    recorded_steps: list[int]
    breaks: list[dict[str, Any]]

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
    return RunRecords(store.meta(), store.scalars(), {k: v for k, v in params.items() if v.steps}, sites,
                      [s for s, _ in store.steps()], store.breaks())
