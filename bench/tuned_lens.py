"""Benchmark (issue 23): tuned-lens training throughput (tokens per second) ÷ the plain
forward's, on the default model and the default corpus: the same windows through the
model alone (no trace, no gradients) and through `train_tuned_lens` (one traced forward,
then each of the 29 trained layers' final norm + unembedding forward and backward).
The unembedding dominates: 2 × 29 products with the [49,152 × 576] matrix per token
against the model's one, so the ratio is bounded by the vocabulary, not by neurodbg.

    .venv/bin/python bench/tuned_lens.py [--tokens 1024] [--seq-len 128] [--json]
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import timed  # bench/timing.py (scripts run from bench/)

import neurodbg
from neurodbg.analyze.tuned_lens_training import corpus_windows, train_tuned_lens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = neurodbg.load_model("default", progress=False)
    windows, _ = corpus_windows(model, "default", seq_len=args.seq_len, train=args.tokens // args.seq_len,
                                held_out=0)
    tokens = len(windows) * args.seq_len

    def plain() -> None:
        with torch.no_grad():
            for start in range(0, len(windows), args.batch):
                model.module(torch.tensor(windows[start:start + args.batch]))

    plain()                                           # warm-up
    t_plain = timed(plain)
    t_train = timed(lambda: train_tuned_lens(model, tokens=tokens, seq_len=args.seq_len, batch=args.batch,
                                             eval_tokens=0, progress=False))
    out = {"tokens": tokens, "plain_tokens_per_s": round(tokens / t_plain, 1),
           "train_tokens_per_s": round(tokens / t_train, 1), "throughput_ratio": round(t_plain / t_train, 4),
           "slowdown": round(t_train / t_plain, 1)}
    if args.json:
        print(json.dumps(out))
        return
    print(f"{tokens} tokens: plain forward {out['plain_tokens_per_s']} tokens/s, tuned-lens training "
          f"{out['train_tokens_per_s']} tokens/s")
    print(f"training throughput ÷ plain forward: {out['throughput_ratio']} ({out['slowdown']}x slower)")


if __name__ == "__main__":
    main()
