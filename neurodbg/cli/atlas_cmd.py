"""`neurodbg atlas info|neuron|export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from neurodbg.atlas import records
from neurodbg.atlas.store import AtlasStore
from neurodbg.cli.common import JsonOpt, console, emit_json
from neurodbg.errors import AtlasError

app = typer.Typer(no_args_is_help=True, help="Read a neuron atlas.")
AtlasOpt = Annotated[Path, typer.Option(help="Atlas directory.")]


def _decoder(store: AtlasStore) -> Any:
    """Token decoding needs the tokenizer of the atlas's model, when it is cached locally."""
    from neurodbg.models import catalogue, provision

    name = store.get("model_name") or ""
    entry = catalogue.lookup(name)
    if entry is None or not provision.is_ready(provision.cached_dir(entry)):
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(provision.cached_dir(entry)))
    return lambda ids: tok.decode(ids)


@app.command("info")
def info(atlas: AtlasOpt, json_out: JsonOpt = False) -> None:
    """What the atlas holds: model, corpus, settings, size."""
    store = AtlasStore.open(atlas)
    data = records.info(store)
    if json_out:
        emit_json(data)
        return
    for key in ("status", "model_name", "corpus_name", "tokens", "sequences", "neurons", "layers",
                "database_bytes", "bytes_per_neuron", "model_fingerprint", "corpus_fingerprint"):
        console.print(f"{key:>20}: {data.get(key)}", markup=False)


@app.command("neuron")
def neuron(neuron_id: Annotated[str, typer.Argument(help="Like L5/N123.")], atlas: AtlasOpt,
           examples: Annotated[int, typer.Option(help="Exemplars to show per polarity.")] = 5,
           json_out: JsonOpt = False) -> None:
    """One neuron: statistics, exemplars (both polarities), output tokens."""
    layer, index, _ = records.parse_neuron_id(neuron_id)
    store = AtlasStore.open(atlas)
    decode = _decoder(store)
    rec = records.neuron(store, layer, index, decode=decode)
    if json_out:
        emit_json(rec.to_dict())
        return
    console.print(f"{rec.id} ({rec.site}) over {rec.n_tokens:,} tokens: mean {rec.mean:.4g}, std {rec.std:.4g}, "
                  f"active {rec.frac_active:.2%}, max {rec.max_value}, min {rec.min_value}", markup=False)
    console.print("tail quantiles: " + ", ".join(f"{k}: {v:.4g}" if v is not None else f"{k}: n/a"
                                                 for k, v in rec.quantiles.items()), markup=False)
    if rec.promoted and decode:
        console.print("promotes: " + ", ".join(repr(decode([int(i)])) for i, _ in rec.promoted), markup=False)
        console.print("suppresses: " + ", ".join(repr(decode([int(i)])) for i, _ in rec.suppressed or []),
                      markup=False)
    for kind, title in (("+", "top (max)"), ("-", "bottom (min)")):
        table = Table("rank", "value", "text (strongest token in [[ ]])", title=title, title_justify="left")
        for ex in rec.exemplars.get(kind, [])[:examples]:
            table.add_row(str(ex.rank), f"{ex.value:.3g}", _highlight(ex, kind))
        console.print(table)


def _highlight(ex: records.Exemplar, kind: str) -> str:
    if not ex.tokens:
        return str(ex.token_ids[:16])
    pick = max if kind == "+" else min
    best = ex.acts.index(pick(ex.acts[1:])) if len(ex.acts) > 1 else 0
    return "".join(f"[[{t}]]" if i == best else t for i, t in enumerate(ex.tokens)).replace("\n", " ")


@app.command("export")
def export(atlas: AtlasOpt, out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
           json_out: JsonOpt = True) -> None:
    """The whole atlas as JSON."""
    store = AtlasStore.open(atlas)
    data = records.export(store, decode=None)
    if out is None:
        emit_json(data)
        return
    try:
        out.write_text(json.dumps(data))
    except OSError as exc:
        raise AtlasError(f"cannot write {out}: {exc.strerror or exc}") from None
    console.print(f"wrote {out}", markup=False)
