"""`neurodbg scan`: one pass over a corpus into a durable neuron atlas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurodbg.cli.common import JsonOpt, ModelOpt, console, emit_json, finite, load, quiet_libraries
from neurodbg.errors import NeurodbgError

SMALL_GPU_BATCH = 64   # below this a GPU scan is launch-bound (bench/scan_device_check.py)


def scan(
    atlas: Annotated[Path, typer.Option(help="Atlas directory (created if absent).")],
    corpus: Annotated[str | None, typer.Option(
        help="'default', a text/JSONL/Parquet file or dir, a datasets dir, hf:NAME.")] = None,
    images: Annotated[str | None, typer.Option(
        help="An image corpus instead of text: 'digits' or a folder (flat, or one subfolder per class).")] = None,
    model: ModelOpt = "default",
    weights: Annotated[Path | None, typer.Option(help="With --images: a torchvision model's weights file.")] = None,
    max_images: Annotated[int | None, typer.Option(min=1, help="With --images: stop after this many images.")]
    = None,
    tokens: Annotated[int | None, typer.Option(min=1, help="Stop after this many tokens (default: all).")] = None,
    sites: Annotated[list[str] | None, typer.Option("--sites", help="Sites to scan (default layers.*.mlp.act).")]
    = None,
    text_field: Annotated[str, typer.Option(help="JSONL/Parquet/datasets text field.")] = "text",
    seq_len: Annotated[int, typer.Option(min=4, help="Tokens per sequence.")] = 64,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Sequences (default 8) or images (default 64) per forward pass.")] = None,
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
    histogram and output tokens. Kill it any time: rerunning the command resumes.
    With --images, every channel of a vision model's sites over an image corpus."""
    from neurodbg.corpus import open_corpus
    from neurodbg.scan.settings import ScanSettings

    if (corpus is None) == (images is None):
        raise NeurodbgError("give one of --corpus (text) or --images (digits or a folder of images)")
    if images is not None:
        if backend != "local":
            raise NeurodbgError("image scans run locally (--backend local)")
        _scan_images(images, atlas, "digits" if model == "default" else model, weights, max_images, sites,
                     batch_size or 64, top_k, random_k, checkpoint_every, device, json_out)
        return
    if weights is not None or max_images is not None:
        raise NeurodbgError("--weights and --max-images are for image scans (--images)")
    batch_size = batch_size or 8
    assert corpus is not None
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


def _scan_images(images: str, atlas: Path, model: str, weights: Path | None, max_images: int | None,
                 sites: list[str] | None, batch_size: int, top_k: int, random_k: int, checkpoint_every: float,
                 device: str, json_out: bool) -> None:
    from neurodbg.vision.image_corpus import open_image_corpus
    from neurodbg.vision.image_scan import image_settings, scan_images
    from neurodbg.vision.zoo import open_vision_model

    corpus = open_image_corpus(images)          # a bad folder fails before the model loads
    quiet_libraries()
    m = open_vision_model(model, weights=weights, progress=not json_out)
    target = _device(device)
    if target != "cpu":
        m.module.to(target)
    source = str(Path(model).expanduser().resolve()) if Path(model).expanduser().exists() else model
    settings = image_settings(sites, batch_size=batch_size, top_k=top_k, random_k=random_k, max_images=max_images)
    summary = scan_images(m, corpus, atlas, settings, source=source, weights=weights, progress=not json_out,
                          checkpoint_seconds=checkpoint_every)
    if json_out:
        emit_json(summary.to_dict())
        return
    console.print(f"atlas {summary.atlas}: {summary.status}; {summary.neurons:,} channels from {summary.sequences:,} "
                  f"images of {corpus.name}; {summary.images_per_s or 0:,.0f} images/s over {summary.seconds:,.1f} s"
                  + (f"; resumed after {summary.resumed_from:,} images" if summary.resumed_from else ""),
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
