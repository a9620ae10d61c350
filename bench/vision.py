"""Benchmark: vision models (issue 21), each figure a ratio measured in one process.

scan      image-scan throughput ÷ the plain forward: the same preprocessed batches through
          the model alone and through the scanner (every canonical site's statistics:
          exemplars with per-position activations, tails, moments, histogram). Decoding
          and preprocessing, the same for both, are left out. Target: ≥ 0.9, i.e. the
          scan takes ≤ 1.11x the forward. The digits: whole scans of the corpus against
          plain passes over it, alternating, the median of the rounds' ratios. ResNet-18:
          one scan of fresh random batches, timed batch by batch against the plain forward
          after a warm-up (as a long scan runs).
floors    (--floors) the digits: what the scan's throughput could at best be, as whole passes
          with plain forward hooks on the 7 sites ÷ passes without: hooks that do nothing,
          one `sum` of each output (a single read), torch's `amax` per image and channel, and
          the C++ image kernel with thresholds nothing reaches (sums, extremes, histogram: the
          pass without exemplars or tail values entering); and whole scans with the statistics
          left out (`scanner`: the scanner and its trace alone).
maximize  activation maximisation of N steps ÷ N plain forward + backward passes (to the
          logits, input gradient) at the same resolution, alternating (the digits: the median
          of `--rounds` rounds; ResNet-18: one). Target: ≤ 1.3.

Models: the digits CNN (8x8: a scan of all 1,797 digits in batches of 256) and ResNet-18
(224 px, random weights and random pictures — speed depends on neither — batches of 32).

    .venv/bin/python bench/vision.py [--rounds 5] [--models digits,resnet18] [--steps 512]
        [--resnet-steps 64] [--warm 8] [--resnet-batches 16] [--floors] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import torch
from timing import timed  # bench/timing.py (scripts run from bench/)

import neurodbg
from neurodbg.scan.scanner import Scanner
from neurodbg.vision.image_scan import image_scan_sites, image_settings
from neurodbg.vision.input_spec import input_spec
from neurodbg.vision.maximize import maximize


def digits_batches(model: neurodbg.Model, batch: int) -> list[torch.Tensor]:
    """The digits: the whole corpus, once (a real scan's stream)."""
    from neurodbg.vision.image_corpus import open_image_corpus
    from neurodbg.vision.images import batch_of

    corpus = open_image_corpus("digits")
    return [batch_of(model, [corpus.image(i) for i in range(start, min(len(corpus), start + batch))])
            for start in range(0, len(corpus), batch)]


def scan_ratio(model: neurodbg.Model, name: str, batch: int, rounds: int) -> dict[str, object]:
    """The digits: each round the plain forward over the whole corpus, then a fresh scanner over
    it (a whole scan, its first batches included)."""
    data = digits_batches(model, batch)
    sites = image_scan_sites(model)

    def plain() -> None:
        with torch.no_grad():
            for x in data:
                model.module(x)

    def scan() -> None:
        scanner = Scanner(model, image_settings(batch_size=batch), wide=False, sites=sites)
        seen = 0
        for x in data:
            scanner.forward(x, list(range(seen, seen + len(x))))
            seen += len(x)

    plain()
    scan()                     # warm-up: allocations, and the C++ kernel built if this machine lacks it
    ratios, base_times = [], []
    for _ in range(rounds):
        base = timed(plain)
        ratios.append(timed(scan) / base)
        base_times.append(base)
    ratio = statistics.median(ratios)
    images = sum(len(x) for x in data)
    return {"model": name, "batch": batch, "images": images, "sites": len(sites),
            "plain_images_per_s": round(images / statistics.median(base_times), 1),
            "scan_time_ratio": round(ratio, 3), "throughput_ratio": round(1 / ratio, 3),
            "rounds": [round(r, 3) for r in ratios]}


def floors(model: neurodbg.Model, batch: int, rounds: int) -> dict[str, float]:
    """The digits: whole passes with plain hooks on every scanned site ÷ plain passes, per hook; and
    whole scans with the statistics left out ÷ plain passes (the scanner and its trace alone)."""
    from neurodbg.scan import image_kernel, site_stats
    from neurodbg.scan.site_stats import TAIL_SIDES, SiteStats
    from neurodbg.scan.stream_batch import StreamBatch

    data = digits_batches(model, batch)
    modules = dict(model.module.named_modules())
    sites = image_scan_sites(model)
    settings = image_settings(batch_size=batch)
    unreachable: dict[str, SiteStats] = {}
    ids = [StreamBatch.of(list(range(n * batch, n * batch + len(x))), settings.sample_every, settings.hist_every)
           for n, x in enumerate(data)]
    at = [0]

    def kernel_only(path: str, out: torch.Tensor) -> None:
        if path not in unreachable:      # thresholds nothing reaches: no exemplar, no tail value enters
            length = out[0, 0].numel() if out.dim() == 4 else 1
            stats = unreachable[path] = SiteStats(out.shape[1], settings, length=length, fuse_after=0)
            stats.top._keys.fill_(float("inf"))
            stats.bottom._keys.fill_(float("inf"))
            for side, sign in TAIL_SIDES.items():
                stats.tails[side].bound.fill_(sign * float("inf"))
        assert unreachable[path].update_maps(out, ids[at[0]])

    hooks = {"nothing": lambda path, out: None, "sum": lambda path, out: out.sum(),
             "amax": lambda path, out: out.amax((2, 3)) if out.dim() == 4 else out.amax(0),
             "kernel": kernel_only}

    def plain() -> None:
        with torch.no_grad():
            for x in data:
                model.module(x)

    def hooked(name: str) -> None:
        def hook(path: str) -> Callable[..., None]:
            def run(_module: torch.nn.Module, _inputs: object, out: torch.Tensor) -> None:
                hooks[name](path, out)     # (returns nothing: a hook's return would replace the output)
            return run

        handles = [modules[site.module_path].register_forward_hook(hook(site.module_path)) for site in sites]
        try:
            with torch.no_grad():
                for n, x in enumerate(data):
                    at[0] = n
                    model.module(x)
        finally:
            for handle in handles:
                handle.remove()

    def scanner_alone() -> None:
        original = site_stats.SiteStats.update_maps
        site_stats.SiteStats.update_maps = lambda self, acts, batch: True   # type: ignore[method-assign]
        try:
            scanner = Scanner(model, settings, wide=False, sites=sites)
            for n, x in enumerate(data):
                scanner.forward(x, list(range(n * batch, n * batch + len(x))))
        finally:
            site_stats.SiteStats.update_maps = original   # type: ignore[method-assign]

    assert image_kernel.module(True) is not None, "the image kernel could not be built"
    plain()
    out = {}
    runs: dict[str, Callable[[], None]] = {name: lambda name=name: hooked(name) for name in hooks}
    runs["scanner"] = scanner_alone
    for name, run in runs.items():
        run()
        out[name] = round(statistics.median(timed(plain) / timed(run) for _ in range(3 * rounds)), 3)
    return out


def steady_scan_ratio(model: neurodbg.Model, name: str, batch: int, warm: int, timed_batches: int
                      ) -> dict[str, object]:
    """One scan of fresh batches: `warm` batches untimed (the first batches merge densely, as a
    real scan's do once), then each later batch timed through the plain forward and through the
    scanner in turn; the figure is the ratio of the sums."""
    scanner = Scanner(model, image_settings(batch_size=batch), wide=False, sites=image_scan_sites(model))
    generator = torch.Generator().manual_seed(0)
    spec = input_spec(model)
    seen, plain_s, scan_s, ratios = 0, 0.0, 0.0, []
    for k in range(warm + timed_batches):
        x = spec.normalise(torch.rand((batch, spec.channels, spec.size, spec.size), generator=generator))
        with torch.no_grad():
            base = timed(lambda x=x: model.module(x)) if k >= warm else 0.0
        ids = list(range(seen, seen + batch))
        took = timed(lambda x=x, ids=ids: scanner.forward(x, ids))
        seen += batch
        if k >= warm:
            plain_s, scan_s = plain_s + base, scan_s + took
            ratios.append(took / base)
    ratio = scan_s / plain_s
    return {"model": name, "batch": batch, "after_images": warm * batch, "timed_images": timed_batches * batch,
            "sites": len(scanner.sites), "plain_images_per_s": round(timed_batches * batch / plain_s, 1),
            "scan_time_ratio": round(ratio, 3), "throughput_ratio": round(1 / ratio, 3),
            "median_batch_ratio": round(statistics.median(ratios), 3)}


def maximize_ratio(model: neurodbg.Model, name: str, site: str, channel: int, steps: int, rounds: int
                   ) -> dict[str, object]:
    """Rounds alternating the plain passes and the maximisation; the median of the rounds' ratios."""
    spec = input_spec(model)
    generator = torch.Generator().manual_seed(0)
    pixels = spec.normalise(torch.rand((1, spec.channels, spec.size, spec.size), generator=generator))
    for p in model.module.parameters():
        p.requires_grad_(False)

    def plain() -> None:
        for _ in range(steps):
            x = pixels.clone().requires_grad_(True)
            model.module(x).sum().backward()

    maximize(model, site, channel, steps=4)           # warm-up
    bases, tooks = [], []
    for _ in range(rounds):
        bases.append(timed(plain))
        tooks.append(timed(lambda: maximize(model, site, channel, steps=steps)))
    ratio = statistics.median(t / b for t, b in zip(tooks, bases, strict=True))
    return {"model": name, "site": site, "steps": steps, "size": spec.size,
            "forward_backward_s": round(statistics.median(bases), 3), "maximize_s": round(statistics.median(tooks), 3),
            "ratio": round(ratio, 3), "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="digits,resnet18")
    parser.add_argument("--steps", type=int, default=512, help="maximisation steps (digits)")
    parser.add_argument("--resnet-steps", type=int, default=64, help="maximisation steps (ResNet-18)")
    parser.add_argument("--warm", type=int, default=8, help="ResNet-18: batches of 32 scanned before timing")
    parser.add_argument("--resnet-batches", type=int, default=16, help="ResNet-18: batches of 32 timed")
    parser.add_argument("--floors", action="store_true", help="the digits: also the scan's floors")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    out: dict[str, list[dict[str, object]]] = {"scan": [], "maximize": [], "floors": []}
    for name in args.models.split(","):
        model = neurodbg.load_model(name, progress=False)
        if name == "digits":
            out["scan"].append(scan_ratio(model, name, 256, args.rounds))
            if args.floors:
                out["floors"].append({"model": name, "throughput_ratios": floors(model, 256, args.rounds)})
                if not args.json:
                    print(f"{name}: floors {out['floors'][-1]}", flush=True)
        else:
            out["scan"].append(steady_scan_ratio(model, name, 32, args.warm, args.resnet_batches))
        site, steps = ("stages.1.blocks.1.out", args.steps) if name == "digits" else \
            ("stages.3.blocks.1.out", args.resnet_steps)
        out["maximize"].append(maximize_ratio(model, name, site, 5, steps, args.rounds if name == "digits" else 1))
        if not args.json:
            print(f"{name}: scan {out['scan'][-1]}\n{name}: maximize {out['maximize'][-1]}", flush=True)
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
