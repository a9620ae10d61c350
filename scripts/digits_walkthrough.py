"""The README's "my accuracy won't go up" walkthrough, run for real: a deep sigmoid
network that does not learn, the diagnosis, the fix; a learning rate far too high
stopped at its first non-finite step and replayed; a dead ReLU layer; overfitting.
Writes the runs under RUNS and the figures under docs/img/, and prints what the
README quotes.

    .venv/bin/python scripts/digits_walkthrough.py [--runs runs/walkthrough]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from torch.nn import functional as F

import neurodbg
from neurodbg.train.digits import digits_data, mlp, train
from neurodbg.train.runs import findings, read
from neurodbg.viz.training import run_figure

IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def report(run: Path, result: object) -> None:
    print(f"\n== {run.name}: validation accuracy {result.val_acc:.3f}")       # type: ignore[attr-defined]
    for f in findings(run):
        print(f"[{f.kind}] step {f.step}, {', '.join(f.where)}: {f.message}\n    advice: {f.advice}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs/walkthrough"))
    args = parser.parse_args()
    shutil.rmtree(args.runs, ignore_errors=True)
    IMG.mkdir(parents=True, exist_ok=True)
    data = digits_data()

    net = mlp([64] + [64] * 8 + [10], "sigmoid")                       # 8 hidden sigmoid layers
    result = train(net, torch.optim.SGD(net.parameters(), 0.1), data, steps=500, run=args.runs / "sigmoid")
    report(args.runs / "sigmoid", result)
    run_figure(read(args.runs / "sigmoid"), IMG / "train-sigmoid.png", title="8 sigmoid layers, SGD 0.1: loss")

    net = mlp([64] + [64] * 8 + [10], "relu")                          # the advice: ReLU (He init), Adam
    torch.manual_seed(0)
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            torch.nn.init.zeros_(layer.bias)
    result = train(net, torch.optim.Adam(net.parameters(), 1e-3), data, steps=500, run=args.runs / "relu")
    report(args.runs / "relu", result)
    run_figure(read(args.runs / "relu"), IMG / "train-relu.png", title="8 ReLU layers (He init), Adam 1e-3: loss")

    net = mlp([64, 128, 64, 10], "gelu")
    try:
        train(net, torch.optim.SGD(net.parameters(), 1000.0), data, steps=50, run=args.runs / "diverge",
              watch_options={"break_on": ["nonfinite"]})
    except neurodbg.BreakpointHit as stop:
        print(f"\n== diverge: {stop}")
        replayed = neurodbg.replay(args.runs / "diverge", stop.hit.step, mlp([64, 128, 64, 10], "gelu"),
                                   loss_fn=lambda out, batch: F.cross_entropy(out, batch["extra"][1]))
        print(f"replay: first non-finite site {replayed.first_nonfinite}; loss {float(replayed.loss.detach())}")
        for name, value in replayed.captures.items():
            print(f"   {name}: largest |value| {float(value.abs().nan_to_num(float('inf')).max()):.3g}")

    net = mlp([64, 128, 64, 10])
    with torch.no_grad():
        net[0].bias.fill_(-5.0)
    report(args.runs / "dead", train(net, torch.optim.Adam(net.parameters(), 1e-3), data, steps=200,
                                     run=args.runs / "dead"))

    few = digits_data(train_samples=50)
    net = mlp([64, 512, 512, 10])
    report(args.runs / "overfit", train(net, torch.optim.Adam(net.parameters(), 1e-3), few, steps=300,
                                        batch_size=50, val_every=10, run=args.runs / "overfit"))
    run_figure(read(args.runs / "overfit"), IMG / "train-overfit.png", title="50 training samples: loss")


if __name__ == "__main__":
    main()
