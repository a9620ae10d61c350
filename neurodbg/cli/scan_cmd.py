"""`neurodbg scan`: one pass over a corpus into a durable neuron atlas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurodbg.cli.common import JsonOpt, ModelOpt, console, emit_json, finite, load
from neurodbg.errors import NeurodbgError

SMALL_GPU_BATCH = 64   # below this a GPU scan is launch-bound (bench/scan_device_check.py)


def scan(
    corpus: Annotated[str, typer.Option(help="'default', a text/JSONL/Parquet file or dir, a datasets dir, hf:NAME.")],
    atlas: Annotated[Path, typer.Option(help="Atlas directory (created if absent).")],
    model: ModelOpt = "default",
    tokens: Annotated[int | None, typer.Option(min=1, help="Stop after this many tokens (default: all).")] = None,
    sites: Annotated[list[str] | None, typer.Option("--sites", help="Sites to scan (default layers.*.mlp.act).")]
    = None,
    text_field: Annotated[str, typer.Option(help="JSONL/Parquet/datasets text field.")] = "text",
    seq_len: Annotated[int, typer.Option(min=4, help="Tokens per sequence.")] = 64,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per forward pass.")] = 8,
    top_k: Annotated[int, typer.Option(min=1, help="Exemplars per neuron and polarity.")] = 20,
    random_k: Annotated[int, typer.Option(min=0, help="Random exemplar sequences.")] = 10,
    checkpoint_every: Annotated[float, typer.Option(parser=finite(0.0), help="Seconds between checkpoints.")] = 120.0,
    backend: Annotated[str, typer.Option(help="local or ray.")] = "local",
    workers: Annotated[int, typer.Option(min=1, help="Ray workers (with --backend ray).")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (statistics live there too).")] = "auto",
    gpus_per_worker: Annotated[float, typer.Option(parser=finite(0.0),
                                                   help="GPUs per Ray worker (0: CPU workers).")] = 0.0,
    json_out: JsonOpt = False,
) -> None:
    """Record, for every neuron, its top and bottom exemplars, tail quantiles, moments,
    histogram and output tokens. Kill it any time: rerunning the command resumes."""
    from neurodbg.corpus import open_corpus
    from neurodbg.scan.settings import ScanSettings

    settings = ScanSettings(sites=tuple(sites or ["layers.*.mlp.act"]), seq_len=seq_len, batch_size=batch_size,
                            top_k=top_k, random_k=random_k, max_tokens=tokens)
    source = open_corpus(corpus, text_field=text_field)
    m = load(model, quiet=json_out)
    target = _device(device)
    if target != "cpu":
        m.module.to(target)
        if batch_size < SMALL_GPU_BATCH and not json_out:
            console.print(f"note: on a GPU, batches of {batch_size} are bound by kernel launches; a larger "
                          "--batch-size (256-1024, memory allowing) scans several times faster", markup=False)
    if backend == "local":
        from neurodbg.scan.runner import scan as run_scan

        summary = run_scan(m, source, atlas, settings, progress=not json_out, checkpoint_seconds=checkpoint_every)
    elif backend == "ray":
        from neurodbg.scan.ray_backend import scan_on_ray

        summary = scan_on_ray(model, m, source, atlas, settings, workers=workers, progress=not json_out,
                              corpus_spec=corpus, text_field=text_field, gpus_per_worker=gpus_per_worker)
    else:
        raise NeurodbgError(f"unknown backend {backend!r}; choose local or ray")
    if json_out:
        emit_json(summary.to_dict())
        return
    console.print(f"atlas {summary.atlas}: {summary.status}; {summary.neurons:,} neurons from "
                  f"{summary.tokens:,} tokens ({summary.sequences:,} sequences); "
                  f"{summary.tokens_per_s:,.0f} tokens/s over {summary.seconds:,.1f} s"
                  + (f"; resumed after {summary.resumed_from:,} sequences" if summary.resumed_from else ""),
                  markup=False)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NeurodbgError(f"device {name!r} asked for, but no CUDA device is available")
    if name != "cpu" and not name.startswith("cuda"):
        raise NeurodbgError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")
    return name
