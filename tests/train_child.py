"""A digits training run for the storage tests to start, watch, kill and starve of disk:
`python tests/train_child.py RUN STEPS [--break] [--slow S]`; prints `step N` after
every optimizer step and exits 2 with `error: ...` on a neurodbg error."""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch
from torch.nn import functional as F

import neurodbg
from neurodbg.train.digits import batches, digits_data, mlp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("steps", type=int)
    parser.add_argument("--break", dest="breakpoints", action="store_true")
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--flush-every", type=int, default=10)
    args = parser.parse_args()
    warnings.simplefilter("default")
    data = digits_data()
    net = mlp([64, 256, 256, 10])
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    try:
        with neurodbg.watch(net, opt, run=args.run, flush_every=args.flush_every, flush_seconds=3600,
                            break_on=["nonfinite"] if args.breakpoints else None) as w:
            for step, (x, y) in zip(range(args.steps), batches(data, 64, 0), strict=False):
                loss = F.cross_entropy(net(x), y)
                w.log(loss=loss)
                opt.zero_grad()
                loss.backward()
                opt.step()
                print(f"step {step}", flush=True)
                if args.slow:
                    time.sleep(args.slow)
    except neurodbg.NeurodbgError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
