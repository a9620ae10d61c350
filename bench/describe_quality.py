"""Benchmark: how well an atlas's descriptions predict their neurons (issue 24, item 3).

Reads every described candidate's scores from a described atlas (`neurodbg
describe --atlas ATLAS` first) and prints, per group of layers, the median
simulation score (Pearson r), the shares >= 0.5 and >= 0.8, and the median
detection and fuzzing AUROC — each beside the same figure for a shuffled
description (another neuron's, scored on this neuron's held-out excerpts).
Target on the default model's 131,072-token atlas: median simulation >= 0.45
and share >= 0.5 at least 35 %.

    .venv/bin/python bench/describe_quality.py --atlas ATLAS [--explainer stat] [--markdown]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from neurodbg.atlas import AtlasStore, descriptions, records


def _values(rows: list[dict], method: str, *, shuffled: bool) -> np.ndarray:
    out = []
    for r in rows:
        source = r.get("shuffled") if shuffled else r
        if not source:
            continue
        value = source.get(method)
        if isinstance(value, dict):
            value = value.get("auroc")
        if value is not None:
            out.append(value)
    return np.array(out, dtype=np.float64)


def _median(x: np.ndarray) -> str:
    return f"{np.median(x):.3f}" if len(x) else "n/a"


def _share(x: np.ndarray, at: float) -> str:
    return f"{100 * (x >= at).mean():.1f} %" if len(x) else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--atlas", type=Path, required=True)
    parser.add_argument("--explainer", default="stat")
    args = parser.parse_args()
    store = AtlasStore.open(args.atlas)
    layers = records.layers(store)
    scored = list(descriptions.all_scores(store, args.explainer))
    if not scored:
        raise SystemExit(f"{args.atlas} has no scored {args.explainer} descriptions; run neurodbg describe first")
    last = layers[-1]
    edges = [0, 5, 15, 25, last + 1] if last >= 25 else [0, last + 1]
    groups = [("all", 0, last + 1)] + [(f"{a}–{b - 1}", a, b) for a, b in itertools.pairwise(edges)]
    print(f"{len(scored):,} scored {args.explainer} descriptions of {args.atlas}\n")
    print("| layers | simulation median | ≥ 0.5 | ≥ 0.8 | detection AUROC | fuzzing AUROC |")
    print("|---|---|---|---|---|---|")
    for name, a, b in groups:
        rows = [s for (layer, _, _), s in scored if a <= layer < b]
        sim, sim0 = _values(rows, "simulation", shuffled=False), _values(rows, "simulation", shuffled=True)
        det, det0 = _values(rows, "detection", shuffled=False), _values(rows, "detection", shuffled=True)
        fuz, fuz0 = _values(rows, "fuzzing", shuffled=False), _values(rows, "fuzzing", shuffled=True)
        print(f"| {name} | **{_median(sim)}** (shuffled {_median(sim0)}) | {_share(sim, 0.5)} ({_share(sim0, 0.5)}) "
              f"| {_share(sim, 0.8)} | {_median(det)} ({_median(det0)}) | {_median(fuz)} ({_median(fuz0)}) |")
    sim = _values([s for _, s in scored], "simulation", shuffled=False)
    ok = np.median(sim) >= 0.45 and (sim >= 0.5).mean() >= 0.35
    print(f"\ntarget (median >= 0.45, share >= 0.5 at least 35 %): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
