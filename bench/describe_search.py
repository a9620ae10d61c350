"""Benchmark: statistical descriptions per second, and search latency.

Descriptions: the default model's first `--layers` layers are scanned over
`--tokens` tokens of the default corpus into a temporary atlas (or `--atlas` is
used as it is), then described with the statistical explainer and simulator
(explain + simulate + score + store; embedding excluded and timed apart).

Search: exact cosine top-50 over synthetic indexes of 46,080 and 500,000
descriptions (random unit vectors; the cost does not depend on the contents),
median and p99 over `--queries` real query embeddings, with and without
embedding the query text. Target (issue 4): median <= 50 ms at 500,000.

    .venv/bin/python bench/describe_search.py [--layers 2] [--tokens 24576]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np

import neurodbg
from neurodbg.atlas import AtlasStore, descriptions
from neurodbg.corpus import open_corpus
from neurodbg.describe.exemplars import ExemplarReader
from neurodbg.describe.explainers import make
from neurodbg.describe.runner import background, describe
from neurodbg.scan import ScanSettings, scan
from neurodbg.search.embedder import DIMENSIONS, embed
from neurodbg.search.index import DescriptionIndex

QUERIES = ["Bible verses", "dates", "numbers and digits", "Python code", "punctuation", "names of people",
           "the end of a sentence", "negation", "plural nouns", "line breaks", "questions", "archaic English",
           "function arguments", "years", "colons", "quotes", "capital letters", "the word the", "verbs", "time"]


def describe_rate(atlas: Path, model: neurodbg.Model) -> None:
    store = AtlasStore.open(atlas)
    reader = ExemplarReader(store)
    t0 = time.perf_counter()
    explainer, simulator = make("stat", background(store, model.tokenizer, reader))
    setup = time.perf_counter() - t0
    summary = describe(store, explainer, simulator, reader=reader, progress=False)
    data = summary.to_dict()
    print(f"statistical explainer: {data['described']:,} neuron-polarities in {data['seconds']:.1f} s = "
          f"{data['per_second']:,.0f}/s (set-up {setup:.1f} s); median score {data['median_score']}, "
          f">=0.5 {data['share_ge_0.5']}, >=0.8 {data['share_ge_0.8']}")
    texts = [e.text for e in islice(descriptions.best(store), 2048)]
    t0 = time.perf_counter()
    embed(texts)
    print(f"embedding descriptions: {len(texts) / (time.perf_counter() - t0):,.0f}/s")


def search_latency(n: int, queries: np.ndarray, rounds: int) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, DIMENSIONS), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = DescriptionIndex(vectors, rng.integers(0, 30, n), rng.integers(0, 1536, n),
                             np.where(rng.random(n) < 0.5, "+", "-"), rng.random(n), [""] * n)
    times = []
    for _ in range(rounds):
        for q in queries:
            t0 = time.perf_counter()
            index.search(q, 50)
            times.append(time.perf_counter() - t0)
    filtered = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q, 50, layers=range(5, 13), polarity="+", min_score=0.5)
        filtered.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    print(f"search top-50 over {n:>7,} descriptions: median {np.median(ms):6.2f} ms, p99 "
          f"{np.percentile(ms, 99):6.2f} ms; with filters median {np.median(filtered) * 1e3:6.2f} ms"
          + ("  (target <= 50 ms: " + ("met" if np.median(ms) <= 50 else "MISSED") + ")" if n >= 500_000 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", type=Path, help="use this atlas instead of scanning a temporary one")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=24_576)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    model = neurodbg.load_model("default", progress=False)
    t0 = time.perf_counter()
    query_vectors = embed(QUERIES[: args.queries])
    singles = []
    for q in QUERIES[: args.queries]:
        t1 = time.perf_counter()
        embed([q])
        singles.append(time.perf_counter() - t1)
    print(f"query embedding: median {statistics.median(singles) * 1e3:.1f} ms per query "
          f"(model load {time.perf_counter() - t0 - sum(singles):.1f} s)")
    for n in (46_080, 500_000):
        search_latency(n, query_vectors, args.rounds)
    if args.atlas:
        describe_rate(args.atlas, model)
        return
    with tempfile.TemporaryDirectory() as tmp:
        settings = ScanSettings(sites=(f"layers.0-{args.layers - 1}.mlp.act",), max_tokens=args.tokens)
        scan(model, open_corpus("default"), Path(tmp) / "atlas", settings, progress=False)
        describe_rate(Path(tmp) / "atlas", model)


if __name__ == "__main__":
    main()
