"""Benchmark: a router-health scan (`moe report`'s inner loop) ÷ the plain forward, on a
random-initialised Mixtral-style model at a realistic width (hidden 1024, 8 experts of
2,816, top-2, 4 layers, a 32k vocabulary), batches of 8 x 64 random tokens.

The report stops each forward after the last router; so the comparison is with the plain
forward stopped at the same point (a hook on the last router ends it), and, for scale,
with the whole plain forward. Rounds alternate; the figures are medians of per-round
ratios. Target (issue 22): throughput ≥ 0.95 of the plain forward, i.e. time ratio ≤ 1.05.

    .venv/bin/python bench/moe_report.py [--rounds 5] [--batches 4] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics

import torch
import transformers
from timing import timed  # bench/timing.py (scripts run from bench/)

import neurodbg
from neurodbg.analyze.router_health import RouterStats


class _Stop(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = transformers.MixtralConfig(vocab_size=32_000, hidden_size=1024, intermediate_size=2816,
                                        num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=4,
                                        num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=256)
    torch.manual_seed(0)
    module = transformers.AutoModelForCausalLM.from_config(config).eval()
    model = neurodbg.Model(module, name="mixtral-style (random)")
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 32_000, (8, 64), generator=generator) for _ in range(args.batches)]
    layers = list(range(config.num_hidden_layers))
    names = [f"layers.{i}.router.{part}" for i in layers for part in ("logits", "experts", "weights")]
    last_router = module.model.layers[layers[-1]].mlp.gate

    def plain_full() -> None:
        with torch.no_grad():
            for ids in batches:
                module(input_ids=ids, use_cache=False)

    def plain_truncated() -> None:
        def stop(*_: object) -> None:
            raise _Stop
        handle = last_router.register_forward_hook(stop)
        try:
            with torch.no_grad():
                for ids in batches:
                    with contextlib.suppress(_Stop):
                        module(input_ids=ids, use_cache=False)
        finally:
            handle.remove()

    def report() -> None:
        stats = {i: RouterStats(i, 8, 2) for i in layers}
        for ids in batches:
            with model.trace(capture=names, stop_early=True) as tr:
                tr.forward({"input_ids": ids, "use_cache": False})
            for i in layers:
                stats[i].update(tr[f"layers.{i}.router.logits"], tr[f"layers.{i}.router.experts"],
                                tr[f"layers.{i}.router.weights"], 1.25)
        for s in stats.values():
            s.health()

    for fn in (plain_full, plain_truncated, report):
        fn()                                                    # warm-up
    vs_truncated, vs_full = [], []
    for _ in range(args.rounds):
        truncated, full, took = timed(plain_truncated), timed(plain_full), timed(report)
        vs_truncated.append(took / truncated)
        vs_full.append(took / full)
    out = {"model": model.name, "tokens_per_round": 8 * 64 * len(batches),
           "time_ratio_vs_truncated_forward": round(statistics.median(vs_truncated), 3),
           "throughput_vs_truncated_forward": round(1 / statistics.median(vs_truncated), 3),
           "time_ratio_vs_full_forward": round(statistics.median(vs_full), 3),
           "rounds_vs_truncated": [round(r, 3) for r in vs_truncated]}
    print(json.dumps(out, indent=None if not args.json else 2))


if __name__ == "__main__":
    main()
