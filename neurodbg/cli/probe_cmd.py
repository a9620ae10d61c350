"""`neurodbg probe`: where a concept lives, layer by layer (`analyze.probes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurodbg.cli.common import JsonOpt, ModelOpt, console, emit_json, load
from neurodbg.errors import NeurodbgError


def probe(
    data: Annotated[str, typer.Option("--data", help="A labelled prompt set: .csv or .jsonl (text, label), "
                                                     "or example:sources.")],
    site: Annotated[str, typer.Option(help="Sites probed (a pattern: one per layer).")] = "layers.*.resid_out",
    folds: Annotated[int, typer.Option(min=2, max=20, help="Cross-validation folds.")] = 5,
    positive: Annotated[str | None, typer.Option(help="The class the exported direction points to.")] = None,
    position: Annotated[str, typer.Option(help="last: each prompt's last token; mean: its tokens averaged.")]
    = "last",
    classifier: Annotated[str, typer.Option(help="ridge (scikit-learn's RidgeClassifier: closed-form, fast) or "
                                                 "logistic (LogisticRegression: ~50x slower to fit).")] = "ridge",
    per_class: Annotated[int, typer.Option(min=2, max=10_000, help="Prompts per class of an example set.")] = 100,
    save_direction: Annotated[Path | None, typer.Option(help="Write the best layer's direction as an "
                                                              "add_vector intervention (JSON) here.")] = None,
    png: Annotated[Path | None, typer.Option(help="Write the accuracy curve here.")] = None,
    model: ModelOpt = "default",
    json_out: JsonOpt = False,
) -> None:
    """Linear probes at every layer: cross-validated accuracy, class separation, the best layer, its direction."""
    from neurodbg.analyze.probe_data import load_probe_data
    from neurodbg.analyze.probes import probe as run_probe

    if position not in ("last", "mean"):
        raise NeurodbgError(f"--position is last or mean, not {position!r}")
    if classifier not in ("logistic", "ridge"):
        raise NeurodbgError(f"--classifier is logistic or ridge, not {classifier!r}")
    labelled = load_probe_data(data, per_class=per_class)
    m = load(model, quiet=json_out)
    report = run_probe(m, labelled, site=site, folds=folds, positive=positive,
                       position="mean" if position == "mean" else "last",
                       classifier="ridge" if classifier == "ridge" else "logistic", progress=not json_out)
    if save_direction is not None:
        save_direction.write_text(report.direction_json() + "\n", encoding="utf-8")
    if png is not None:
        report.figure(png)
    if json_out:
        emit_json(report.to_dict())
        return
    console.print(f"{report.data}: {', '.join(f'{c} ({n})' for c, n in report.counts.items())}; chance "
                  f"{report.chance:.3f}; {report.folds}-fold cross-validation", markup=False)
    for p in report.layers:
        mark = "  <- best" if p is report.best else ""
        console.print(f"{p.site:<24} accuracy {p.accuracy:.3f} ± {p.accuracy_std:.3f}  separation "
                      f"{p.separation:.3f}{mark}", markup=False)
    if report.effect is not None:
        e = report.effect
        console.print(f"adding the direction ({e.positive} − the rest) at {e.site} to {e.prompts} other prompts: "
                      f"the last layer's probe calls {e.positive} {e.positive_share_before:.0%} -> "
                      f"{e.positive_share_after:.0%} of them", markup=False)
