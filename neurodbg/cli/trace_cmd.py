"""`neurodbg trace PROMPT`: run the model once, print the most active neurons
per site, optionally edit activations and draw heatmaps and bar charts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from neurodbg.analyze.top_neurons import Polarity, top_neurons
from neurodbg.cli.common import JsonOpt, ModelOpt, console, emit_json, load
from neurodbg.errors import InterventionError, NeuronIndexError
from neurodbg.trace.interventions import loads


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
    chat: Annotated[bool, typer.Option(help="Wrap the prompt in the model's chat template.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Trace PROMPT and show the most active neurons (default: every layer's MLP neurons)."""
    sites = site or ["layers.*.mlp.act"]
    interventions = _read_interventions(intervene) if intervene else []
    m = load(model, quiet=json_out)
    names = [s.name for s in m.resolve(sites)]
    tr = m.run(prompt, capture=names, interventions=interventions, chat=chat)
    ids = m.encode(prompt, chat=chat)[0]
    tokens = m.tokens(ids)
    result: dict[str, Any] = {"model": m.name, "prompt": prompt, "tokens": tokens, "sites": {}}
    pol: Polarity = polarity  # type: ignore[assignment]
    for name in names:
        acts = tr[name]
        hits = top_neurons(acts, top, pol)
        result["sites"][name] = {
            "shape": list(acts.shape),
            "top": [{**h.to_dict(), "token": tokens[h.token_index] if h.token_index is not None
                     and h.token_index < len(tokens) else None} for h in hits]}
    if png:
        result["png"] = str(_heatmap(tr, names, tokens, columns, pol, png))
    if bar_png:
        result["bar_png"] = str(_bars(tr, names[0], tokens, token, bar_png))
    if json_out:
        emit_json(result)
        return
    table = Table("site", f"top {top} neurons ({polarity}): N<index> value @ token", title=m.name)
    for name, info in result["sites"].items():
        cells = [f"N{h['neuron']} {h['value']:.3g}" + (f" @ {h['token']!r}" if h["token"] is not None else "")
                 for h in info["top"]]
        table.add_row(name, "  ".join(cells))
    console.print(table, markup=False)
    for key in ("png", "bar_png"):
        if key in result:
            console.print(f"wrote {result[key]}", markup=False)


def _read_interventions(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InterventionError(f"cannot read intervention file {path}: {exc}") from None
    return loads(text)


def _heatmap(tr: Any, names: list[str], tokens: list[str], columns: int, pol: Polarity, out: Path) -> Path:
    import torch

    from neurodbg.viz import heatmap

    if len(names) == 1:
        acts = tr[names[0]][0].float()
        if acts.dim() != 2:
            raise InterventionError(f"{names[0]} has shape {tuple(acts.shape)}; a heatmap needs tokens x neurons")
        score = {"pos": acts, "neg": -acts, "abs": acts.abs()}[pol].amax(0)
        cols = score.topk(min(columns, score.numel())).indices.sort().values
        return heatmap(acts[:, cols].numpy(), row_labels=[repr(t)[1:-1] for t in tokens],
                       col_labels=[f"N{int(c)}" for c in cols], title=f"{names[0]}: top {len(cols)} neurons", path=out)
    rows = []
    for name in names:
        acts = tr[name][0].float()
        rows.append(acts.amax(0) if acts.dim() == 2 else acts)
    widths = {r.numel() for r in rows}
    if len(widths) != 1:
        raise InterventionError("sites of different widths cannot share a heatmap; pass one --site")
    grid = torch.stack(rows).numpy()
    width = grid.shape[1]
    return heatmap(grid, row_labels=names, col_labels=[f"N{i}" for i in range(width)],
                   title="max activation over tokens", path=out, ylabel="site")


def _bars(tr: Any, name: str, tokens: list[str], token: int, out: Path) -> Path:
    from neurodbg.viz import bar_chart

    acts = tr[name][0].float()
    n = acts.shape[0]
    index = token + n if token < 0 else token
    if not 0 <= index < n:
        raise NeuronIndexError(f"token {token} out of range for a prompt of {n} tokens")
    return bar_chart(acts[index].numpy(), title=f"{name} at token {index} ({tokens[index]!r})", path=out)
