"""`neurodbg trace PROMPT`: run the model once, print the most active neurons
per site, optionally edit activations and draw heatmaps and bar charts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurodbg.cli.common import JsonOpt, ModelOpt, console, emit_json, load, read_interventions
from neurodbg.errors import NeurodbgError


def trace(
    prompt: Annotated[str, typer.Argument(help="Text to run through the model.")],
    model: ModelOpt = "default",
    site: Annotated[list[str] | None, typer.Option("--site", "-s", help="Site name or pattern (repeatable).")] = None,
    top: Annotated[int, typer.Option(min=1, help="Neurons to list per site.")] = 10,
    polarity: Annotated[str, typer.Option(help="Rank by pos, neg or abs activation.")] = "pos",
    png: Annotated[Path | None, typer.Option(help="Write a heatmap PNG here.")] = None,
    bar_png: Annotated[Path | None, typer.Option(help="Write a bar chart of one token's neurons here.")] = None,
    token: Annotated[int, typer.Option(help="Token for the bar chart (negative counts from the end).")] = -1,
    columns: Annotated[int, typer.Option(min=1, help="Neuron columns in a single-site heatmap.")] = 48,
    intervene: Annotated[Path | None, typer.Option(help="JSON file of interventions to apply.")] = None,
    include_first: Annotated[bool, typer.Option(help="Rank and draw position 0 too (the attention sink, left "
                                                     "out by default as in an atlas).")] = False,
    chat: Annotated[bool, typer.Option(help="Wrap the prompt in the model's chat template.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Trace PROMPT and show the most active neurons (default: every layer's MLP neurons)."""
    from neurodbg.analyze.trace_view import trace_view

    if polarity not in ("pos", "neg", "abs"):
        raise NeurodbgError(f"unknown polarity {polarity!r}; choose pos, neg or abs")
    interventions = read_interventions(intervene) if intervene else []
    m = load(model, quiet=json_out)
    view = trace_view(m, prompt, site or ["layers.*.mlp.act"], top=top, polarity=polarity,  # type: ignore[arg-type]
                      include_first=include_first, interventions=interventions, chat=chat)
    result = view.to_dict()
    if png:
        result["png"] = str(view.heatmap(png, columns=columns))
    if bar_png:
        result["bar_png"] = str(view.bars(bar_png, token=token))
    if json_out:
        emit_json(result)
        return
    table = Table("site", f"top {top} neurons ({polarity}): N<index> value @ token", title=m.name)
    for name, info in result["sites"].items():
        cells = [f"N{h['neuron']} {h['value']:.3g}" + (f" @ {h['token']!r}" if h["token"] is not None else "")
                 for h in info["top"]]
        table.add_row(name, "  ".join(cells))
    console.print(table, markup=False)
    if view.note:
        console.print(view.note, markup=False)
    for key in ("png", "bar_png"):
        if key in result:
            console.print(f"wrote {result[key]}", markup=False)
