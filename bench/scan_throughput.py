"""Benchmark: scan throughput vs the plain forward pass truncated at the last
scanned layer, same batches, same process, default model, all 30 x 1536 neurons.

Rounds alternate plain/scan on the same batch after a warm-up (the scan's
statistics are first fed batches, as a long scan would be); the figure is the
median of per-round throughput ratios (scan / plain). `--at 100,400,1000` times
rounds at several points of one scan: the statistics' cost falls as the tail and
exemplar thresholds settle, so a whole scan's throughput depends on where most
of its batches are. Target (issue 3): >= 0.9. Also prints the atlas size per
neuron from a finished small scan.

    .venv/bin/python bench/scan_throughput.py [--rounds 12] [--at 100] [--device cuda] [--batch 256]
        [--layout wide|per-layer]

`--layout` picks how the statistics are updated (default: the scanner's own choice,
`wide_by_default`: all layers at once on a GPU or a CPU with 8+ threads, else per layer).
On a CPU the scan's C++ layer kernel is built (once per machine, ~40 s) or loaded before
the clock starts, as an installed neurodbg would have it after its first scan.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from paired import paired_rounds, synchronizer, truncated_forward

import neurodbg
from neurodbg.corpus import open_corpus
from neurodbg.scan import ScanSettings, scan
from neurodbg.scan.runner import batches, sequence_stream
from neurodbg.scan.scanner import Scanner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--at", default="100",
                        help="comma-separated scan positions (batches already scanned) at which to time rounds")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size-tokens", type=int, default=4096, help="tokens for the bytes-per-neuron scan")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda")
    parser.add_argument("--layout", choices=("wide", "per-layer"), default=None)
    args = parser.parse_args()

    model = neurodbg.load_model("default", device=args.device, progress=False)
    settings = ScanSettings(batch_size=args.batch)
    corpus = open_corpus("default")
    stream = batches(sequence_stream(corpus, model, settings), args.batch)
    scanner = Scanner(model, settings, wide=None if args.layout is None else args.layout == "wide")
    synchronize = synchronizer(model)
    if model.device.type == "cpu":
        from neurodbg.scan import layer_kernel

        t0 = time.perf_counter()
        layer_kernel.load()
        print(f"C++ layer kernel ready in {time.perf_counter() - t0:.1f} s (built once per machine, then loaded)")

    points = sorted({int(x) for x in args.at.split(",")})
    tokens = args.batch * settings.seq_len
    print(f"{model.name} on {model.device}: batch {args.batch} x {settings.seq_len}, "
          f"{'wide' if scanner.wide else 'per-layer'} statistics, {args.rounds} paired rounds at each point, "
          f"{torch.get_num_threads()} threads")
    fed, scan_seconds, all_plain = 0, 0.0, []
    for point in points:
        while fed < point:
            batch = next(stream)
            t0 = time.perf_counter()
            scanner.process(batch)
            synchronize()
            scan_seconds += time.perf_counter() - t0
            fed += 1
        plain_times, scan_times = paired_rounds(stream, truncated_forward(model), scanner.process, args.rounds,
                                                synchronize)
        scan_seconds += sum(scan_times)
        fed += args.rounds
        plain_median = statistics.median(plain_times)
        all_plain += plain_times
        ratio = statistics.median(p / s for p, s in zip(plain_times, scan_times, strict=True))
        print(f"  after {point:,} batches ({point * tokens:,} tokens): scan / plain throughput {ratio:.3f}  "
              f"({'meets' if ratio >= 0.9 else 'MISSES'} >= 0.9; plain {tokens / plain_median:.0f} tokens/s)",
              flush=True)
    # (the plain forward's cost per batch is the same all along, same shapes: its median over all
    # paired rounds, which span the run, stands for it; the machine's speed drifts)
    whole = fed * statistics.median(all_plain) / scan_seconds
    print(f"  whole scan so far ({fed:,} batches from a cold start): {whole:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        small = ScanSettings(batch_size=args.batch, max_tokens=args.size_tokens)
        summary = scan(model, corpus, Path(tmp) / "atlas", small, progress=False)
        size = sum(p.stat().st_size for p in (Path(tmp) / "atlas").iterdir() if p.name.startswith("atlas.db"))
        print(f"  atlas size: {size / summary.neurons:,.0f} bytes per neuron "
              f"({summary.neurons:,} neurons, {summary.tokens:,} tokens, top_k={small.top_k}, "
              f"random_k={small.random_k}, seq_len={small.seq_len}; target <= 50,000)")


if __name__ == "__main__":
    main()
