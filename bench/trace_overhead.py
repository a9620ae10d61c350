"""Benchmark: plain forward vs a traced forward capturing `mlp.act` of all 30
layers of the default model, batch 8 x 128, in one process.

Rounds alternate plain/traced after a warm-up; the figure is the median of the
per-round ratios (absolute times on shared machines drift by +-15 %).
Target (issue 2): overhead <= 5 %, i.e. ratio <= 1.05.

    .venv/bin/python bench/trace_overhead.py [--rounds 10] [--batch 8] [--seq 128]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from timing import timed  # bench/timing.py (scripts run from bench/)

import neurodbg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    model = neurodbg.load_model("default", progress=False)
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq))
    variants: dict[str, dict[str, object]] = {
        "capture all 30 mlp.act (full)": {"capture": "layers.*.mlp.act"},
        "capture all 30 mlp.act (max over tokens)": {"capture": "layers.*.mlp.act", "reduce": "max"},
    }

    def plain() -> None:
        with torch.no_grad():
            model.module(ids)

    runs = {name: (lambda kw=kw: model.run(ids, **kw)) for name, kw in variants.items()}
    plain()
    for fn in runs.values():
        fn()  # warm-up
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    plain_times: list[float] = []
    for _ in range(args.rounds):
        for name, fn in runs.items():
            base = timed(plain)
            traced = timed(fn)
            plain_times.append(base)
            ratios[name].append(traced / base)
    tokens = args.batch * args.seq
    report = {
        "model": model.name, "batch": args.batch, "seq": args.seq, "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "plain_tokens_per_s": round(tokens / statistics.median(plain_times), 1),
        "ratios": {name: round(statistics.median(r), 4) for name, r in ratios.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{model.name}  batch {args.batch} x {args.seq}, {args.rounds} alternating rounds, "
          f"{report['threads']} threads; plain forward {report['plain_tokens_per_s']} tokens/s")
    for name, ratio in report["ratios"].items():
        verdict = "meets" if ratio <= 1.05 else "MISSES"
        print(f"  traced/plain  {name:<42} {ratio:.4f}  ({verdict} the <= 1.05 target)")


if __name__ == "__main__":
    main()
