"""`neurodbg atlas info|neuron|export`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from neurodbg.atlas import export as export_lib
from neurodbg.atlas import records
from neurodbg.atlas.export import FIELDS
from neurodbg.atlas.store import AtlasStore
from neurodbg.cli.common import JsonOpt, console, emit_json, err_console, int_list
from neurodbg.errors import ExportError
from neurodbg.progress import RateProgress

app = typer.Typer(no_args_is_help=True, help="Read a neuron atlas.")
AtlasOpt = Annotated[Path, typer.Option(help="Atlas directory.")]


def _decoder(store: AtlasStore) -> Any:
    """Token decoding needs the tokenizer of the atlas's model, when it is on this machine."""
    from neurodbg.atlas.binding import atlas_tokenizer

    tok = atlas_tokenizer(store)
    return None if tok is None else (lambda ids: tok.decode(ids))


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
           examples: Annotated[int, typer.Option(min=1, help="Exemplars to show per polarity.")] = 5,
           png: Annotated[Path | None, typer.Option(help="Image atlases: write the top and bottom images "
                                                         "(feature maps over them, peaks boxed) here.")] = None,
           json_out: JsonOpt = False) -> None:
    """One neuron: statistics, exemplars (both polarities), output tokens; for an image
    atlas its top and bottom images with the peak and its receptive field."""
    layer, index, _ = records.parse_neuron_id(neuron_id)
    store = AtlasStore.open(atlas)
    if records.is_image_atlas(store):
        _image_neuron(store, layer, index, examples, png, json_out)
        return
    if png is not None:
        raise ExportError("--png is for image atlases; a text atlas's neuron page is its exemplars")
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


def _image_neuron(store: AtlasStore, layer: int, index: int, examples: int, png: Path | None, json_out: bool
                  ) -> None:
    from neurodbg.vision.image_atlas import image_neuron_figure, image_neuron_page

    page = image_neuron_page(store, layer, index, exemplars=examples)
    if png is not None:
        page["png"] = str(image_neuron_figure(store, layer, index, png, exemplars=examples))
    if json_out:
        emit_json(page)
        return
    console.print(f"{page['id']} ({page['site']}) over {page['n_tokens']:,} positions: mean {page['mean']:.4g}, "
                  f"std {page['std']:.4g}, active {page['frac_active']:.2%}, max {page['max_value']}, "
                  f"min {page['min_value']}", markup=False)
    for polarity, found in page["descriptions"].items():
        if found:
            score = "n/a" if found["score"] is None else f"{found['score']:.2f}"
            console.print(f"{polarity} {found['text']} (score {score})", markup=False)
    for kind, title in (("+", "top images (by max)"), ("-", "bottom images (by min)")):
        table = Table("rank", "value", "image", "label / model's class", "peak", "receptive field",
                      title=title, title_justify="left")
        for e in page["exemplars"].get(kind, []):
            peak = e["peak"]
            top, left, bottom, right = e["field"]
            where = "off the grid" if peak["row"] is None else f"r{peak['row']} c{peak['col']}"
            table.add_row(str(e["rank"]), f"{e['value']:.3g}", str(e["name"]),
                          f"{e['label'] or '-'} / {e['predicted'] or '-'}", where, f"r{top}-{bottom} c{left}-{right}")
        console.print(table)
    if png is not None:
        console.print(f"wrote {page['png']}", markup=False)


def _highlight(ex: records.Exemplar, kind: str) -> str:
    if not ex.tokens:
        return str(ex.token_ids[:16])
    pick = max if kind == "+" else min
    best = ex.acts.index(pick(ex.acts[1:])) if len(ex.acts) > 1 else 0
    return "".join(f"[[{t}]]" if i == best else t for i, t in enumerate(ex.tokens)).replace("\n", " ")


@app.command("export")
def export(
    atlas: AtlasOpt,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="JSON Lines: one neuron per line (the default).")] = False,
    json_doc: Annotated[bool, typer.Option("--json", help="One JSON document {meta, neurons: [...]}.")] = False,
    parquet: Annotated[Path | None, typer.Option(help="Write Parquet to this file (pyarrow).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write JSON(L) here instead of stdout.")] = None,
    layers: Annotated[str | None, typer.Option(help="Layers: a list, ranges or both, like 0-3,7 (default: all).")]
    = None,
    fields: Annotated[str | None, typer.Option(
        help=f"Comma-separated, from {', '.join(FIELDS)} (default: all but tokens).")] = None,
) -> None:
    """Stream the atlas out, a layer at a time (memory does not grow with the atlas)."""
    from neurodbg.atlas import export_json, export_parquet
    from neurodbg.atlas.binding import atlas_vocabulary

    if sum((jsonl, json_doc, parquet is not None)) > 1:
        raise ExportError("choose one format: --jsonl, --json or --parquet FILE")
    if parquet is not None and out is not None:
        raise ExportError("--parquet names its own file; --out is for --jsonl and --json")
    store = AtlasStore.open(atlas)
    wanted = None if fields is None else [f.strip() for f in fields.split(",") if f.strip()]
    vocab = atlas_vocabulary(store) if wanted is not None and "tokens" in wanted else None
    selection = export_lib.select(store, int_list(layers, "layers"), wanted, vocab=vocab)
    total = sum(1 for _ in selection.layers) * records.width(store)
    fmt = "parquet" if parquet is not None else "json" if json_doc else "jsonl"
    target = parquet if parquet is not None else out
    with RateProgress(True, f"export ({fmt})", total) as bar:
        if target is None:
            _to_stdout(store, selection, fmt, vocab, bar.advance)
            return
        with export_lib.atomic_file(target, binary=fmt == "parquet") as (_, handle):
            if fmt == "parquet":
                written = export_parquet.write_parquet(store, handle, selection, vocab=vocab, advance=bar.advance)
            else:
                writer = export_json.write_json if fmt == "json" else export_json.write_json_lines
                written = writer(store, handle, selection, vocab=vocab, advance=bar.advance)
    err_console.print(f"wrote {written:,} neurons to {target} ({fmt})", markup=False)


def _to_stdout(store: AtlasStore, selection: export_lib.Selection, fmt: str, vocab: Any, advance: Any) -> None:
    from neurodbg.atlas import export_json

    writer = export_json.write_json if fmt == "json" else export_json.write_json_lines
    try:
        writer(store, sys.stdout, selection, vocab=vocab, advance=advance)
        sys.stdout.flush()
    except BrokenPipeError:       # the reader stopped early (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:
        raise ExportError(f"cannot write the export to stdout: {exc.strerror or exc}") from None
