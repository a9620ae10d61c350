"""Appends a run's flushes on a thread of its own, so the training loop does not wait
for SQLite (a flush of a tiny model's 50 steps is ~900 rows, ~3 ms: a tenth of those
steps' time), nor for turning each step's figures into rows (`step_rows`). Flushes
are written in order, one transaction each; `drain()` waits until everything handed
over is on disk. An error is kept and reported by the next
`submit` or `drain` (the watcher then warns once and stops recording, or raises when
breakpoints need the run)."""

from __future__ import annotations

import json
import math
import queue
import threading
from typing import Any, NamedTuple

from neurodbg.train.router_watch import RouterFigures
from neurodbg.train.run_store import ParamRow, RouterRow, RunStore, ScalarRow, SiteRow
from neurodbg.train.site_stats import Kind, StepSums, read_step, summarise
from neurodbg.train.watch_kernel import RecordBlock, SiteBlock

# (site, kind, (sum, sum of squares, values, fired units, saturated values) or the step's host-side
# accumulator to read them from, non-finite values, units)
SiteFigures = tuple[str, Kind, tuple[float, float, int, int, float | None] | StepSums, int, int]


class RawStep(NamedTuple):
    """One recorded step's figures as the training thread read them."""
    step: int
    time: float
    grad_norm: float | None
    names: list[str]                 # parameter tensors with a gradient
    grad_norms: list[float]
    weight_norms: list[float]        # empty on steps without weight figures
    update_norms: list[float]        # ‖Δw‖ per tensor; empty without an optimizer or weight figures
    lrs: list[float]
    sites: list[SiteFigures] | SiteBlock     # a block: the kernel's figures, expanded here (`watch_kernel`)
    routers: list[RouterFigures] = []     # noqa: RUF012 (a NamedTuple default, never mutated)


Flush = tuple[list[RawStep | RecordBlock], list[ScalarRow], dict[str, Any]]


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def step_rows(raw: list[RawStep | RecordBlock], scalars: list[ScalarRow]
              ) -> tuple[list[tuple[int, float]], list[ScalarRow], list[ParamRow], list[SiteRow], list[RouterRow]]:
    """The run store's rows of some recorded steps (non-finite figures as NULL)."""
    steps: list[tuple[int, float]] = []
    routers: list[RouterRow] = []
    out_scalars = list(scalars)
    params: list[ParamRow] = []
    sites: list[SiteRow] = []
    for r in (s for item in raw for s in (item.raw_steps() if isinstance(item, RecordBlock) else (item,))):
        steps.append((r.step, r.time))
        if r.grad_norm is not None:
            out_scalars.append((r.step, "grad_norm", _num(r.grad_norm)))
        out_scalars.extend((r.step, f"lr/{i}", lr) for i, lr in enumerate(r.lrs))
        n = len(r.names)
        weights: list[float | None] = list(r.weight_norms) if r.weight_norms else [None] * n
        ratios: list[float | None] = [None] * n
        if r.update_norms:
            ratios = [u / w if w else None for u, w in zip(r.update_norms, r.weight_norms, strict=True)]
        grads: list[float | None] = list(r.grad_norms) if r.grad_norms else [None] * n
        params.extend((r.step, name, _num(g), _num(w), _num(u))
                      for name, g, w, u in zip(r.names, grads, weights, ratios, strict=True))
        for name, kind, figures, bad, units in (r.sites if isinstance(r.sites, list) else r.sites.figures()):
            total, squares, count, fired, saturated = read_step([figures])[0] if isinstance(figures, StepSums) \
                else figures
            mean, std, dead, sat = summarise(total, squares, count, fired, saturated, units, kind)
            sites.append((r.step, name, mean, std, dead, sat, bad, units))
        routers.extend((r.step, f.name, f.experts, f.top_k, f.tokens, json.dumps(f.counts), json.dumps(f.probs),
                        _num(f.entropy)) for f in r.routers)
    return steps, out_scalars, params, sites, routers


class RunWriter:
    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.error: BaseException | None = None
        self._queue: queue.Queue[Flush | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="neurodbg-run-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self.error is None:
                    raw, scalars, meta = item
                    self.store.append(*step_rows(raw, scalars), meta=meta)
            except BaseException as exc:        # kept for the training thread to report
                self.error = exc
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def submit(self, flush: Flush) -> None:
        self._raise()
        self._queue.put(flush)

    def drain(self) -> None:
        """Wait until every submitted flush is written; raise the first error."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Write what is pending, stop the thread (errors are left in `error`)."""
        self._queue.put(None)
        self._thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
