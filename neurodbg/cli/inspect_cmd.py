"""`neurodbg inspect`: module tree, parameter counts, memory bill, tokenizer facts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurodbg.cli.common import JsonOpt, ModelOpt, console, emit_json, load
from neurodbg.errors import NeurodbgError
from neurodbg.inspect.memory import OPTIMIZERS, dtype_bytes
from neurodbg.inspect.report import BillSettings, Report, is_config_only, report_config, report_model
from neurodbg.inspect.tree import render_lines


def _gib(n: int) -> str:
    return f"{n / 2**30:,.3f} GiB"


def inspect(
    model: ModelOpt = "default",
    depth: Annotated[int | None, typer.Option(help="Show the module tree to this depth.")] = 4,
    batch: Annotated[int, typer.Option(min=1, help="Batch size for the memory bill.")] = 1,
    seq: Annotated[int, typer.Option(min=1, help="Sequence length for the memory bill.")] = 2048,
    dtype: Annotated[str, typer.Option(help="Dtype of weights/activations in the bill.")] = "bfloat16",
    optimizer: Annotated[str, typer.Option(help="adamw, adam, sgd, sgd-momentum, adafactor, adamw-8bit")] = "adamw",
    checkpointing: Annotated[bool, typer.Option(help="Bill training with activation checkpointing.")] = False,
    text: Annotated[Path | None, typer.Option(help="Text file for the tokenizer's compression rate.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a model's anatomy. A config.json (or a dir with only a config) needs no weights."""
    dtype_bytes(dtype)  # fail on a bad dtype or optimizer before loading anything
    if optimizer.lower() not in OPTIMIZERS:
        raise NeurodbgError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    settings = BillSettings(batch=batch, seq=seq, infer_dtype=dtype, train_dtype=dtype, optimizer=optimizer,
                            checkpointing=checkpointing)
    sample = None
    if text is not None:
        try:
            sample = text.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise NeurodbgError(f"cannot read text file {text}: {exc}") from None
    if is_config_only(model):
        report = report_config(model, settings, depth)
    else:
        report = report_model(load(model, quiet=json_out), settings, depth, sample)
    if json_out:
        emit_json(report.to_dict())
    else:
        _print(report)


def _print(r: Report) -> None:
    console.print(f"[bold]{r.name}[/bold]  family: {r.family or 'unknown (raw paths only)'}"
                  + ("  (from config alone)" if r.config_only else ""))
    console.print(f"parameters: [bold]{r.params.total:,}[/bold]  (trainable {r.params.trainable:,}"
                  + (", embeddings tied" if r.params.tied else "") + ")")
    if r.params.moe:
        first = r.params.moe[0]
        console.print(f"active per token: [bold]{r.params.active_params:,}[/bold]  ({first.top_k} of "
                      f"{first.experts} experts in {len(r.params.moe)} MoE layers)")
    if r.n_layers:
        console.print(f"layers: {r.n_layers}   MLP neurons per layer: {r.neurons_per_layer}")
    console.print("\n[bold]module tree[/bold]")
    for line in render_lines(r.tree):
        console.print(line, markup=False, highlight=False)
    for bill in r.bills:
        table = Table(title=f"memory bill: {bill.mode}", title_justify="left")
        table.add_column("item")
        table.add_column("size", justify="right")
        table.add_column("how")
        for row in bill.lines:
            table.add_row(row.item, _gib(row.bytes), row.note)
        table.add_row("[bold]total[/bold]", f"[bold]{_gib(bill.total)}[/bold]", "")
        console.print(table)
        for a in bill.assumptions:
            console.print(f"  assumes: {a}", markup=False)
    if r.tokenizer:
        t = r.tokenizer
        console.print("\n[bold]tokenizer[/bold]")
        console.print(f"vocabulary {t.vocab_size:,} (base {t.base_vocab_size:,}); "
                      f"{t.chars_per_token} chars/token, {t.bytes_per_token} bytes/token on "
                      f"{t.text_chars:,} chars; specials {t.special_tokens}", markup=False)
