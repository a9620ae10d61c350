"""Benchmark: attribution over all 46,080 mlp.act neurons for one target token vs
a plain forward pass of the same prompt (issue 5 target: <= 2.2x), alternating
rounds in one process, median of per-round ratios. Also a bare forward +
backward with frozen weights (no hooks) for reference, and clustering 1,000
neurons' description embeddings.

    .venv/bin/python bench/attribution.py [--rounds 10] [--tokens 128] [--atlas ATLAS]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import neurodbg
from neurodbg.analyze.clusters import cluster
from neurodbg.analyze.neurons_behind import attribution
from neurodbg.analyze.prompt import Prompt

TEXT = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; and "
        "darkness was upon the face of the deep. ") * 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--atlas", help="cluster real description embeddings from this atlas")
    args = parser.parse_args()

    model = neurodbg.load_model(progress=False)
    ids = model.encode(TEXT)[:, : args.tokens]
    prompt = Prompt(ids, model.tokens(ids[0]), [False] * ids.shape[1])
    pos, target = ids.shape[1] - 1, int(ids[0, -1])

    def plain() -> None:
        with torch.no_grad():
            model.module(ids)

    def bare_backward() -> None:
        params = list(model.module.parameters())
        for p in params:
            p.requires_grad_(False)
        embed = model.module.get_input_embeddings()
        handle = embed.register_forward_hook(lambda _m, _a, out: out.detach().requires_grad_(True))
        try:
            out = model.module(ids).logits[0, pos]
            torch.log_softmax(out.float(), -1)[target].backward()
        finally:
            handle.remove()
            for p in params:
                p.requires_grad_(True)

    def attribute() -> None:
        attribution(model, prompt, pos, target, top=100)

    for fn in (plain, bare_backward, attribute):
        fn()
    ratios, bare = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        plain()
        t1 = time.perf_counter()
        attribute()
        t2 = time.perf_counter()
        bare_backward()
        t3 = time.perf_counter()
        ratios.append((t2 - t1) / (t1 - t0))
        bare.append((t3 - t2) / (t1 - t0))
    ratio = statistics.median(ratios)
    print(f"{model.name}: {ids.shape[1]} tokens, {args.rounds} rounds, {torch.get_num_threads()} threads")
    print(f"  attribution (46,080 neurons, one backward) / plain forward  {ratio:.3f}  "
          f"({'meets' if ratio <= 2.2 else 'MISSES'} <= 2.2)")
    print(f"  bare forward + backward, frozen weights / plain forward    {statistics.median(bare):.3f}")

    if args.atlas:
        from neurodbg.analyze.atlas_view import AtlasView
        from neurodbg.atlas import AtlasStore

        view = AtlasView(AtlasStore.open(args.atlas))
        keys = sorted(view.descriptions())[:: max(1, len(view.descriptions()) // 1000)][:1000]
        vectors = view.embeddings(keys)
        texts = [view.descriptions()[k].text for k in keys]
        source = "real description embeddings"
    else:
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((1000, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = [str(i) for i in range(1000)]
        source = "random unit vectors"
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        found = cluster(vectors, texts)
        times.append(time.perf_counter() - t0)
    print(f"  clustering 1,000 neurons ({source}): {statistics.median(times) * 1e3:.0f} ms median, "
          f"{len(found)} clusters of >= 3")


if __name__ == "__main__":
    main()
