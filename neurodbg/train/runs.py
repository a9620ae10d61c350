"""Runs as the CLI and the web app show them: a directory of runs listed, one run
summarised, diagnosed, drawn or exported. Run names inside a served directory are
plain directory names (no paths)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from neurodbg.errors import RunError
from neurodbg.train.diagnose import Finding, Thresholds, diagnose
from neurodbg.train.records import RunRecords, load_records
from neurodbg.train.run_store import DB_NAME, RunStore

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def read(run: str | Path) -> RunRecords:
    store = RunStore.open(run)
    try:
        return load_records(store)
    finally:
        store.close()


def summary(run: str | Path, records: RunRecords | None = None) -> dict[str, Any]:
    """What a run is and where it stands: its settings, steps, the latest of every scalar, breaks."""
    records = records or read(run)
    meta = records.meta
    latest = {key: values[-1][1] for key, values in records.scalars.items() if values}
    return {"run": str(run), "name": Path(run).name, "status": meta.get("status"), "model": meta.get("model"),
            "parameters": meta.get("parameters"), "optimizer": meta.get("optimizer"), "every": meta.get("every"),
            "steps": records.steps_seen, "recorded_steps": len(records.recorded_steps),
            "sites": list(records.sites) or meta.get("sites", []), "latest": latest, "breaks": records.breaks,
            "started": meta.get("started"), "last_flush": meta.get("last_flush")}


def findings(run: str | Path, thresholds: Thresholds | None = None) -> list[Finding]:
    return diagnose(read(run), thresholds)


def list_runs(directory: str | Path) -> list[dict[str, Any]]:
    """Every run directly inside `directory` (or `directory` itself when it is a run), newest first."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise RunError(f"no runs at {root}: " + ("it is a file" if root.exists() else "the directory does not exist"))
    candidates = [root] if (root / DB_NAME).is_file() else sorted(p for p in root.iterdir() if (p / DB_NAME).is_file())
    out = []
    for path in candidates:
        try:
            records = read(path)
        except RunError as exc:
            out.append({"run": str(path), "name": path.name, "status": "unreadable", "error": str(exc)})
            continue
        info = summary(path, records)
        info["findings"] = len(diagnose(records))
        out.append(info)
    return sorted(out, key=lambda r: -(r.get("started") or 0))


def run_in(directory: str | Path, name: str) -> Path:
    """The run called `name` inside a served directory (a bare name: no paths, no '..')."""
    if not NAME.match(name):
        raise RunError(f"malformed run name {name!r}")
    root = Path(directory).expanduser()
    path = root if (root / DB_NAME).is_file() and root.name == name else root / name
    if not (path / DB_NAME).is_file():
        raise RunError(f"no run named {name!r}")
    return path


def _thin(points: list[tuple[int, float | None]], most: int) -> list[list[float | None]]:
    """At most `most` (step, value) points, evenly spaced over the series (the last one kept)."""
    if len(points) > most:
        stride = len(points) / most
        points = [points[int(i * stride)] for i in range(most - 1)] + [points[-1]]
    return [[s, v] for s, v in points]


def run_view(run: str | Path, *, most: int = 400) -> dict[str, Any]:
    """What the web app's Training view draws: the summary, the findings, the loss and validation
    curves, the global gradient norm, each parameter tensor's gradient norms and each rectifier
    site's dead share over the recorded steps (every series thinned to `most` points)."""
    records = read(run)
    out = summary(run, records)
    out["findings"] = [f.to_dict() for f in diagnose(records)]
    out["curves"] = {key: _thin(records.series(key), most) for key in ("loss", "val_loss", "val_acc", "grad_norm")
                     if records.series(key)}
    out["grad_norms"] = {name: _thin(list(zip(p.steps, p.grad_norm, strict=True)), most)
                         for name, p in records.params.items()}
    out["dead"] = {name: _thin(list(zip(s.steps, s.dead, strict=True)), most)
                   for name, s in records.sites.items() if any(d is not None for d in s.dead)}
    return out
