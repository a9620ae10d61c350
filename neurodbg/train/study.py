"""Hyperparameter search on digits with Optuna, pruned by the watcher's findings, and
the report `neurodbg runs study` prints.

The seeds' example is the default: Adam's learning rate log-uniform in 1e-5 … 1e-2
and 2–6 hidden layers, 50 trials. Studies live in Optuna's RDB storage
(`sqlite:///study.db` on one machine; a PostgreSQL or MySQL URL for workers on many
machines): every worker that calls `search_digits` with the same name and storage
joins the same study, and a search killed midway is resumed by calling it again
(trials a killed worker left running are failed after the heartbeat's grace period
and retried once). A name already used with other settings is refused."""

from __future__ import annotations

import fcntl
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from torch.nn import functional as F

from neurodbg.errors import RunError
from neurodbg.train.digits import batches, digits_data, evaluate, mlp
from neurodbg.train.optuna_pruner import FINDINGS_ATTR, HOPELESS, RUN_ATTR, FindingsPruner, TrialWatch
from neurodbg.train.runs import read

SETTINGS_ATTR = "neurodbg_settings"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass(frozen=True)
class DigitsSearch:
    lr_low: float = 1e-5
    lr_high: float = 1e-2
    min_layers: int = 2             # hidden layers
    max_layers: int = 6
    width: int = 64
    optimizer: str = "adam"         # adam or sgd
    steps: int = 300                # per trial, batch 64
    report_every: int = 25
    prune: bool = True              # with FindingsPruner (else none: the same search, unpruned)
    seed: int = 0

    def settings(self) -> dict[str, Any]:
        return asdict(self)


def storage_of(url: str, *, heartbeat: int = 10, grace: int = 30) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at `url`. Workers starting together would each create its schema (and
    the loser fail on a duplicate version row): for a SQLite file they take turns under a lock
    beside it, and anywhere else a failed first attempt is tried once more, when the schema exists."""
    def create() -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():      # heartbeats are marked experimental; they are what resumes a search
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {},
                heartbeat_interval=heartbeat, grace_period=grace,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))

    database = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    for attempt in range(2):
        try:
            if database and database != ":memory:" and Path(database).parent.is_dir():
                with _file_lock(Path(database + ".lock")):
                    return create()
            return create()
        except Exception as exc:       # a bad URL, an unreadable file: optuna and SQLAlchemy raise many kinds
            if attempt == 0 and database is None:
                time.sleep(1.0)
                continue
            raise RunError(f"cannot open the Optuna storage {url}: {str(exc).splitlines()[0][:200]}") from None
    raise AssertionError("unreachable")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_study(name: str, storage: optuna.storages.BaseStorage, settings: dict[str, Any], *,
               pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create the study, or join it; a study of this name with other settings is refused."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=settings.get("seed", 0)),
                                load_if_exists=True)
    saved = study.user_attrs.get(SETTINGS_ATTR)
    if saved is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
    elif saved != settings:
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        raise RunError(f"study {name!r} already exists with other settings ({', '.join(changed)} differ); "
                       f"use another name")
    return study


def search_digits(name: str, storage: str, runs: str | Path, *, trials: int = 50,
                  search: DigitsSearch | None = None, heartbeat: int = 10, grace: int = 30) -> optuna.Study:
    """Run (or join, or resume) the digits search until the study holds `trials` finished trials."""
    search = search or DigitsSearch()
    data = digits_data(seed=search.seed)
    pruner = FindingsPruner() if search.prune else optuna.pruners.NopPruner()
    study = open_study(name, storage_of(storage, heartbeat=heartbeat, grace=grace), search.settings(),
                       pruner=pruner)
    runs_dir = Path(runs).expanduser() / name

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", search.lr_low, search.lr_high, log=True)
        layers = trial.suggest_int("layers", search.min_layers, search.max_layers)
        net = mlp([64] + [search.width] * layers + [10], seed=search.seed + trial.number)
        opt = (torch.optim.Adam(net.parameters(), lr) if search.optimizer == "adam"
               else torch.optim.SGD(net.parameters(), lr))
        val_acc = 0.0
        with TrialWatch(trial, net, opt, runs=runs_dir, every=5, kinds=HOPELESS if search.prune else (),
                        break_on=["nonfinite"] if search.prune else None, flush_every=1000) as w:
            for step, (x, y) in zip(range(search.steps), batches(data, 64, search.seed), strict=False):
                loss = F.cross_entropy(net(x), y)
                w.batch(x, y)
                w.log(loss=loss)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if (step + 1) % search.report_every == 0:
                    val_loss, val_acc = evaluate(net, data.x_val, data.y_val)
                    w.log(val_loss=val_loss, val_acc=val_acc)
                    w.report(val_acc if math.isfinite(val_loss) else 0.0, step + 1)
        return val_acc

    done = sum(1 for t in study.get_trials(deepcopy=False) if t.state in FINISHED)
    if done < trials:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(objective, n_trials=trials - done,
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=FINISHED)])
    return study


def study_report(name: str, storage: str, *, png: str | Path | None = None) -> dict[str, Any]:
    """Every trial's hyperparameters, state, value, steps run and findings; the best trial; the steps
    pruning saved against every trial running its full budget; Optuna's parameter importances."""
    try:
        study = optuna.load_study(study_name=name, storage=storage_of(storage))
    except KeyError:
        raise RunError(f"no study named {name!r} in {storage}") from None
    settings = study.user_attrs.get(SETTINGS_ATTR, {})
    budget = int(settings.get("steps", 0))
    rows = []
    for t in study.get_trials(deepcopy=False):
        run = t.user_attrs.get(RUN_ATTR)
        steps, curve = 0, sorted(t.intermediate_values.items())
        if run and Path(run).is_dir():
            try:
                steps = read(run).steps_seen
            except RunError:
                steps = 0
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                     "steps": steps, "findings": t.user_attrs.get(FINDINGS_ATTR, []), "curve": curve, "run": run})
    complete = [r for r in rows if r["state"] == "complete"]
    best = max(complete, key=lambda r: r["value"]) if complete else None
    try:
        importances = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):       # too few complete trials to fit
        importances = {}
    run_steps = sum(r["steps"] for r in rows)
    report = {"study": name, "settings": settings, "trials": rows, "best_trial": best["number"] if best else None,
              "best_value": best["value"] if best else None, "best_params": best["params"] if best else None,
              "pruned": sum(r["state"] == "pruned" for r in rows),
              "pruned_by_findings": sum(bool(r["findings"]) for r in rows),
              "steps_run": run_steps, "steps_without_pruning": budget * len(rows),
              "steps_saved": budget * len(rows) - run_steps if budget else None, "importances": importances}
    if png is not None:
        _curves(rows, png, name)
        report["png"] = str(png)
    return report


def _curves(rows: list[dict[str, Any]], path: str | Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    colours = {"complete": "tab:blue", "pruned": "tab:red", "fail": "tab:gray", "running": "tab:orange"}
    for r in rows:
        if r["curve"]:
            steps, values = zip(*r["curve"], strict=True)
            ax.plot(steps, values, "-", color=colours.get(r["state"], "black"), alpha=0.6, linewidth=1)
    for state, colour in colours.items():
        ax.plot([], [], color=colour, label=state)
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"study {name}: every trial's validation accuracy (red: pruned)", fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(Path(path))
    except OSError as exc:
        raise RunError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
