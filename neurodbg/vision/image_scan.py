"""`scan_images`: an image corpus into the same durable atlas a text scan makes.

An image is a "sequence" and a site's positions are its "tokens": a convolution's
channels are the neurons, each pixel of its feature map a position (a vision
transformer's tokens are its positions, a pooled vector or the logits one
position). So the scanner, its statistics, checkpoints and the atlas are the text
scan's own; what differs is the input (preprocessed image batches), the positions
per item (they shrink from stage to stage), and what the atlas keeps beside each
neuron's exemplars: the exemplar images as the model saw them, their labels, the
model's class for them, and each site's position grid and receptive field.

Sites are the canonical ones of the model (every CNN site; a vision transformer's
`layers.*.mlp.act` and `logits`), numbered as atlas layers in model order: the
digits CNN's `stem` is L0, ..., `logits` L6."""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import CorpusError, NeurodbgError, ScanMemoryError
from neurodbg.model import Model
from neurodbg.progress import RateProgress
from neurodbg.scan import checkpoint
from neurodbg.scan.finalize import check_finite, exemplar_sequences, write_rows
from neurodbg.scan.runner import ScanSummary, out_of_memory, resume_checkpoint, save_checkpoint
from neurodbg.scan.scanner import Scanner
from neurodbg.scan.settings import ScanSettings
from neurodbg.sites.site import Site
from neurodbg.vision.image_corpus import ImageCorpus
from neurodbg.vision.images import batch_of
from neurodbg.vision.input_spec import InputSpec, input_spec
from neurodbg.vision.receptive_field import position_grids

KIND = "images"
PNG_SIDE = 64           # exemplar images up to this side are kept as PNG, larger ones as JPEG


def image_settings(sites: list[str] | None = None, *, batch_size: int = 64, top_k: int = 20, random_k: int = 10,
                   max_images: int | None = None) -> ScanSettings:
    """Scan settings for images. Every position counts (no attention sink to skip); the histogram
    reads every 16th image (a ResNet's first stage has 3,136 positions an image: ~200k values per
    channel in 16 images), the sampled tails every 4th."""
    return ScanSettings(sites=tuple(sites or ()), seq_len=0, batch_size=batch_size, top_k=top_k, random_k=random_k,
                        skip_first=False, hist_every=16, sample_every=4,
                        extra={"input": KIND, "max_images": max_images})


def image_scan_sites(model: Model, patterns: list[str] | None = None) -> list[Site]:
    """The sites to scan, each with its atlas layer: its transformer layer where it has one,
    otherwise its place among the model's canonical sites."""
    canonical = model.sites
    if not canonical and not patterns:
        raise NeurodbgError(f"{model.name} has no canonical sites; name the sites to scan (raw module paths)")
    if patterns:
        chosen = model.resolve(patterns)
    else:
        layered = [name for name in canonical if model.site(name).layer is not None]
        wanted = [n for n in layered if n.endswith(".mlp.act")] + [n for n in canonical if n == "logits"] \
            if layered else canonical
        chosen = model.resolve(wanted)
    out: list[Site] = []
    taken: dict[int, str] = {}
    for i, site in enumerate(chosen):
        if not site.scannable:
            raise NeurodbgError(f"{site.name} cannot be scanned (attention patterns have no neurons)")
        layer = site.layer if site.layer is not None else \
            canonical.index(site.name) if site.name in canonical else len(canonical) + i
        if layer in taken:
            raise NeurodbgError(f"scan one site per layer: {taken[layer]} and {site.name} share layer {layer}")
        taken[layer] = site.name
        out.append(replace(site, layer=layer))
    return out


def _identity(model: Model, corpus: ImageCorpus, settings: ScanSettings, spec: InputSpec) -> dict[str, str]:
    corpus_id = hashlib.sha256(json.dumps([corpus.fingerprint(), spec.channels, spec.size]).encode()).hexdigest()
    return {"model_fingerprint": model.fingerprint(), "corpus_fingerprint": corpus_id,
            "settings_fingerprint": settings.fingerprint()}


def scan_images(model: Model, corpus: ImageCorpus, atlas_dir: str | Path, settings: ScanSettings | None = None, *,
                source: str | None = None, weights: str | Path | None = None, progress: bool = True,
                checkpoint_seconds: float = 120.0, stop_after_batches: int | None = None) -> ScanSummary:
    """Scan `corpus` with the vision `model` into the atlas at `atlas_dir`; resumable like a
    text scan. `source` (what `open_vision_model` opens: `digits`, a torchvision name, a model
    directory; default the model's name) and `weights` are recorded so the atlas can load its model."""
    settings = settings or image_settings()
    if settings.extra.get("input") != KIND:
        raise NeurodbgError("an image scan takes image settings (neurodbg.vision.image_scan.image_settings)")
    directory = Path(atlas_dir).expanduser()
    spec = input_spec(model)
    sites = image_scan_sites(model, list(settings.sites) or None)
    scanner = Scanner(model, settings, wide=False, sites=sites)
    limit = min(corpus.size, settings.extra.get("max_images") or corpus.size)
    identity = _identity(model, corpus, settings, spec)
    store = AtlasStore.open(directory, create=True)
    try:
        store.claim(identity, {"kind": KIND, "model_name": model.name, "model_source": model.source,
                               "vision_model": {"name": source or model.name,
                                                "weights": str(Path(weights).resolve()) if weights else None},
                               "corpus_name": corpus.name, "settings_name": "scan-images",
                               "settings": settings.to_dict(), "sites": [s.name for s in sites],
                               "hist_edges": settings.hist_edges(), "label_names": corpus.label_names,
                               "label_counts": _label_counts(corpus, limit),
                               "class_names": model.labels,
                               "input": {"channels": spec.channels, "size": spec.size}})
        if store.status == "complete":
            return _summary(store, directory, 0.0, 0)
        done = resume_checkpoint(directory, scanner, [identity])
        resumed_from = scanner.sequences
        started = time.perf_counter()
        if not done:
            try:
                finished = _run(scanner, corpus, limit, directory, identity, progress, checkpoint_seconds,
                                stop_after_batches)
            except RuntimeError as error:
                if not out_of_memory(error):
                    raise
                raise ScanMemoryError(f"out of memory scanning batches of {settings.batch_size} images on "
                                      f"{model.device}: scan into a new atlas with a smaller --batch-size; "
                                      f"{directory} keeps its last checkpoint") from error
            if not finished:
                return _summary(store, directory, time.perf_counter() - started, resumed_from, "partial", scanner)
            save_checkpoint(directory, identity, scanner, done=True)
        if scanner.sequences == 0:
            raise CorpusError(f"the image corpus {corpus.name} is empty")
        elapsed = time.perf_counter() - started
        grids = position_grids(model, [s.name for s in sites], spec.channels, spec.size)
        summary = {"sequences": scanner.sequences, "tokens": scanner.sequences, "images": scanner.sequences,
                   "scan_seconds": round(elapsed, 2), "grids": {name: grid.to_dict() for name, grid in grids.items()}}
        with RateProgress(progress, "writing atlas", sum(s.width for s in scanner.stats.values())) as bar:
            check_finite(scanner)
            rows = exemplar_images(model, corpus, sorted(exemplar_sequences(scanner)), spec, settings.batch_size)
            write_rows(store, scanner, model, [], summary, bar.advance, image_rows=rows)
        checkpoint.remove(directory)
        return _summary(store, directory, elapsed, resumed_from)
    finally:
        store.close()


def _label_counts(corpus: ImageCorpus, limit: int) -> list[int] | None:
    """How many of the scanned images carry each label (the base rates descriptions are judged by)."""
    if not corpus.label_names:
        return None
    counts = [0] * len(corpus.label_names)
    for i in range(limit):
        counts[corpus.label(i)] += 1
    return counts


def _run(scanner: Scanner, corpus: ImageCorpus, limit: int, directory: Path, identity: dict[str, str],
         progress: bool, checkpoint_seconds: float, stop_after: int | None) -> bool:
    """Scan from where the scanner stands to `limit`; False when stopped early (`stop_after` batches)."""
    size = scanner.settings.batch_size
    last_save = time.monotonic()
    with RateProgress(progress, "scanning", limit, unit="images", done=scanner.sequences) as bar:
        batches = 0
        while scanner.sequences < limit:
            indices = list(range(scanner.sequences, min(limit, scanner.sequences + size)))
            pixels = batch_of(scanner.model, [corpus.image(i) for i in indices])
            scanner.forward(pixels, indices)
            bar.advance(len(indices))
            batches += 1
            if time.monotonic() - last_save >= checkpoint_seconds:
                save_checkpoint(directory, identity, scanner, done=False)
                last_save = time.monotonic()
            if stop_after is not None and batches >= stop_after and scanner.sequences < limit:
                save_checkpoint(directory, identity, scanner, done=False)
                return False
    return True


def model_view(pixels: torch.Tensor, spec: InputSpec) -> np.ndarray:
    """Preprocessed inputs [N, C, H, W] back to uint8 pixels [N, H, W, C] (normalisation undone)."""
    x = pixels.detach().float().cpu()
    if spec.mean is not None and spec.std is not None:
        x = x * torch.tensor(spec.std).view(1, -1, 1, 1) + torch.tensor(spec.mean).view(1, -1, 1, 1)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def encode_picture(pixels: np.ndarray) -> bytes:
    """[H, W, C] uint8 -> PNG (small images, exact) or JPEG (larger ones, quality 90)."""
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    out = io.BytesIO()
    if max(image.size) <= PNG_SIDE:
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=90)
    return out.getvalue()


@torch.no_grad()
def exemplar_images(model: Model, corpus: ImageCorpus, indices: list[int], spec: InputSpec, batch: int
                    ) -> list[tuple[int, str, int, int, bytes]]:
    """Atlas rows for the exemplar images: (index, name, label, the model's class, picture)."""
    rows = []
    for start in range(0, len(indices), batch):
        chunk = indices[start:start + batch]
        pixels = batch_of(model, [corpus.image(i) for i in chunk])
        predicted = [-1] * len(chunk)
        if model.labels:
            output = model.module(pixels)
            logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
            if isinstance(logits, torch.Tensor) and logits.dim() == 2:
                predicted = logits.argmax(dim=1).tolist()
        for i, picture, guess in zip(chunk, model_view(pixels, spec), predicted, strict=True):
            rows.append((i, corpus.item_name(i), corpus.label(i), int(guess), encode_picture(picture)))
    return rows


def _summary(store: AtlasStore, directory: Path, elapsed: float, resumed_from: int, status: str | None = None,
             scanner: Scanner | None = None) -> ScanSummary:
    from neurodbg.atlas import records

    meta = store.meta()
    images = scanner.sequences if scanner else int(meta.get("images", 0))
    rate = round((images - resumed_from) / elapsed, 1) if elapsed > 0 else 0.0
    return ScanSummary(atlas=str(directory), status=status or str(meta.get("status")), sequences=images,
                       tokens=images, neurons=records.neuron_count(store), seconds=round(elapsed, 2),
                       tokens_per_s=rate, resumed_from=resumed_from, images_per_s=rate)
