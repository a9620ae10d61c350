"""`neurodbg runs list|show|diagnose|plot|tensorboard|study`: read training runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from neurodbg.cli.common import JsonOpt, console, emit_json

app = typer.Typer(no_args_is_help=True, help="Training runs recorded by neurodbg.watch: findings and figures.")
RunArg = Annotated[Path, typer.Argument(help="A run directory (made by neurodbg.watch).")]


@app.command("list")
def list_runs(directory: Annotated[Path, typer.Argument(help="A directory of runs (or one run).")] = Path("runs"),
              json_out: JsonOpt = False) -> None:
    """Every run in a directory: status, steps, the latest loss, how many findings."""
    from neurodbg.train.runs import list_runs as listing

    rows = listing(directory)
    if json_out:
        emit_json(rows)
        return
    if not rows:
        console.print(f"no runs in {directory}", markup=False)
    for r in rows:
        if r["status"] == "unreadable":
            console.print(f"{r['name']:<24} unreadable: {r['error']}", markup=False)
            continue
        loss = r["latest"].get("loss")
        console.print(f"{r['name']:<24} {r['status']:<9} {r['steps']:>7,} steps  loss "
                      f"{'n/a' if loss is None else f'{loss:.4g}':>9}  {r['findings']} finding(s)", markup=False)


@app.command("show")
def show(run: RunArg, json_out: JsonOpt = False) -> None:
    """A run's settings, where it stands, and its findings."""
    from neurodbg.train.runs import findings, summary

    data = summary(run)
    data["findings"] = [f.to_dict() for f in findings(run)]
    if json_out:
        emit_json(data)
        return
    console.print(f"{data['name']}: {data['status']}, {data['steps']:,} steps ({data['recorded_steps']:,} recorded, "
                  f"every {data['every']}); {data['model']} with {data['parameters']:,} parameters, "
                  f"optimizer {data['optimizer']}", markup=False)
    console.print("latest: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in sorted(data["latest"].items())), markup=False)
    for hit in data["breaks"]:
        console.print(f"breakpoint at step {hit['step']}: {hit['detail']} ({hit['module']}); snapshot "
                      f"{run / 'breaks' / hit['directory']}", markup=False)
    _print_findings(data["findings"])


def _print_findings(found: list[dict]) -> None:
    if not found:
        console.print("no findings: nothing in the records says this run is unhealthy", markup=False)
    for f in found:
        console.print(f"[{f['kind']}] step {f['step']}, {', '.join(f['where'])}: {f['message']}", markup=False)
        console.print(f"    evidence: {json.dumps(f['evidence'])}", markup=False)
        console.print(f"    advice: {f['advice']}", markup=False)


@app.command("diagnose")
def diagnose(run: RunArg, json_out: JsonOpt = False) -> None:
    """Findings, each with what, where, since which step, the evidence and what usually fixes it."""
    from neurodbg.train.runs import findings

    found = [f.to_dict() for f in findings(run)]
    if json_out:
        emit_json(found)
        return
    _print_findings(found)


@app.command("plot")
def plot(run: RunArg, png: Annotated[Path, typer.Option(help="Write the figure here.")] = Path("run.png"),
         json_out: JsonOpt = False) -> None:
    """Loss curves, a layers x steps heatmap of gradient norms, dead units per layer over steps."""
    from neurodbg.errors import RunError
    from neurodbg.train.runs import read
    from neurodbg.viz.training import run_figure

    records = read(run)
    try:
        out = run_figure(records, png, title=f"{run.name}: loss")
    except OSError as exc:
        raise RunError(f"cannot write {png}: {exc.strerror or exc}") from None
    if json_out:
        emit_json({"png": str(out)})
        return
    console.print(f"wrote {out}", markup=False)


@app.command("tensorboard")
def tensorboard(run: RunArg, out: Annotated[Path, typer.Option(help="Directory for the event files.")],
                json_out: JsonOpt = False) -> None:
    """Export the run as TensorBoard event files (`tensorboard --logdir OUT`)."""
    from neurodbg.train.runs import read
    from neurodbg.train.tensorboard_export import export_tensorboard

    directory, written = export_tensorboard(read(run), out)
    if json_out:
        emit_json({"directory": str(directory), "values": written})
        return
    console.print(f"wrote {written:,} values to {directory}", markup=False)


@app.command("study")
def study(name: Annotated[str, typer.Argument(help="The Optuna study's name.")],
          storage: Annotated[str, typer.Option(help="Optuna storage URL, e.g. sqlite:///study.db.")],
          png: Annotated[Path | None, typer.Option(help="Write each trial's curves here.")] = None,
          json_out: JsonOpt = False) -> None:
    """Each trial's hyperparameters next to its findings and curves, and Optuna's parameter importances."""
    from neurodbg.train.study import study_report

    report = study_report(name, storage, png=png)
    if json_out:
        emit_json(report)
        return
    console.print(f"study {name}: {len(report['trials'])} trials, best value {report['best_value']} "
                  f"(trial {report['best_trial']}); pruned {report['pruned']}, pruned by findings "
                  f"{report['pruned_by_findings']}", markup=False)
    for t in report["trials"]:
        found = ", ".join(f["kind"] for f in t["findings"]) or "-"
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        value = "n/a" if t["value"] is None else f"{t['value']:.4f}"
        console.print(f"#{t['number']:<4} {t['state']:<9} {value:>8} {t['steps']:>5} steps  {params}  findings: "
                      f"{found}", markup=False)
    if report["importances"]:
        console.print("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                           report["importances"].items()), markup=False)
    if png:
        console.print(f"wrote {png}", markup=False)
