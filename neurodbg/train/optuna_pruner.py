"""Optuna trials watched by neurodbg, and a pruner that ends a trial as soon as its
findings make it hopeless.

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-5, 1e-2, log=True)
        net, opt = ..., torch.optim.Adam(net.parameters(), lr)
        with TrialWatch(trial, net, opt, runs="runs/search") as w:
            for step in range(steps):
                ...train one step..., w.log(loss=loss)
                if step % 25 == 24:
                    w.report(val_acc, step)          # may raise optuna.TrialPruned
        return val_acc

    study = optuna.create_study(direction="maximize", pruner=FindingsPruner(), storage=...)

`TrialWatch` records the trial as a run (`RUNS/trial-0007`, named on the trial as
user attribute `neurodbg_run`); at each report it reads the run's findings and, if
one is of a hopeless kind — a NaN or infinity (`nonfinite`), `exploding_gradients`,
most units of a layer dead (`dead_units`) — stores it on the trial
(`neurodbg_findings`) and prunes. A breakpoint hit inside the trial (e.g.
`break_on=["nonfinite"]`) prunes it the same way. Otherwise the wrapped pruner
(`FindingsPruner(inner=MedianPruner())`, default none) decides."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import optuna
import torch
from torch import nn

from neurodbg.errors import BreakpointHit
from neurodbg.train.diagnose import diagnose
from neurodbg.train.records import load_records
from neurodbg.train.run_store import RunStore
from neurodbg.train.watch import Watcher

HOPELESS = ("nonfinite", "exploding_gradients", "dead_units")
FINDINGS_ATTR = "neurodbg_findings"
RUN_ATTR = "neurodbg_run"


class FindingsPruner(optuna.pruners.BasePruner):
    """Prune a trial its watcher marked hopeless; otherwise ask `inner` (default: never prune)."""

    def __init__(self, inner: optuna.pruners.BasePruner | None = None) -> None:
        self.inner = inner or optuna.pruners.NopPruner()

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.user_attrs.get(FINDINGS_ATTR):
            return True
        return bool(self.inner.prune(study, trial))


class TrialWatch:
    """A `Watcher` for one Optuna trial (see the module docstring)."""

    def __init__(self, trial: optuna.Trial, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 runs: str | Path, kinds: tuple[str, ...] = HOPELESS, **watch_options: Any) -> None:
        self.trial = trial
        self.kinds = kinds
        self.run = Path(runs).expanduser() / f"trial-{trial.number:04d}"
        trial.set_user_attr(RUN_ATTR, str(self.run))
        self.watcher = Watcher(model, optimizer, run=self.run, **watch_options)

    def __enter__(self) -> TrialWatch:
        self.watcher.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.watcher.__exit__(exc_type, exc, tb)
        if isinstance(exc, BreakpointHit):
            self._prune_on(self.findings(), f"breakpoint: {exc}")

    def log(self, **values: float | torch.Tensor) -> None:
        self.watcher.log(**values)

    def batch(self, *tensors: Any) -> None:
        self.watcher.batch(*tensors)

    def findings(self) -> list[dict[str, Any]]:
        """The run's findings so far, of the hopeless kinds (read from the run, as any reader would)."""
        self.watcher.flush()
        store = RunStore.open(self.run)
        try:
            return [f.to_dict() for f in diagnose(load_records(store)) if f.kind in self.kinds]
        finally:
            store.close()

    def report(self, value: float, step: int) -> None:
        """Report an intermediate value; prune (raise `optuna.TrialPruned`) when the findings make the trial
        hopeless or the inner pruner says so."""
        self.trial.report(value, step)
        hopeless = self.findings()
        if hopeless:
            self._prune_on(hopeless, f"step {step}")
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")

    def _prune_on(self, hopeless: list[dict[str, Any]], when: str) -> None:
        if not hopeless:
            return
        self.trial.set_user_attr(FINDINGS_ATTR, hopeless)
        raise optuna.TrialPruned(f"{hopeless[0]['kind']} ({when}): {hopeless[0]['message']}")
