"""Benchmark: a training step watched by `neurodbg.watch` ÷ the same step unwatched.

Two identical copies of a model train side by side on the same batches, one watched
(every=1 or every=10: gradient, weight and update norms of every parameter tensor
and activation statistics of every default site on recorded steps; the run written
to a temporary directory in flushes) and one not; rounds of `--steps` steps
alternate between them after a warm-up, and the figure is the median of the
per-round ratios. The warm-up takes the watched run past its first 50 steps, whose
weight norms are recorded on every recorded step (a start-up cost: for the default
model a copy of its 135 M weights per step); the ratio is the steady state.
Targets (issue 20): every=1 <= 1.10, every=10 <= 1.02.

`--floor` also times, the same way, a lower bound for any hook-based watcher in
Python: bare forward hooks on the same sites, each doing one BLAS reduction of its
output, and one fused norm call over the gradients before the update — nothing
stored, no learning rates, weights or breakpoints.

    digits MLP (64-256-256-10, ReLU, Adam, batch 128)      --model digits (default)
    the default model fine-tuned (SmolLM2-135M, AdamW, batch 4 x 128)   --model default

    .venv/bin/python bench/watch_overhead.py [--model digits|default] [--rounds 40] [--steps 20] [--floor]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

import neurodbg
from neurodbg.train.digits import batches, digits_data, mlp
from neurodbg.train.watch import DENSE_START

Step = Callable[[], None]


def digits_steps(seed: int = 0) -> tuple[torch.nn.Module, Callable[[torch.nn.Module], Step], str]:
    data = digits_data()
    net = mlp([64, 256, 256, 10], seed=seed)

    def make(model: torch.nn.Module) -> Step:
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        stream = iter(batches(data, 128, seed))

        def step() -> None:
            x, y = next(stream)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        step.optimizer = opt  # type: ignore[attr-defined]
        return step
    return net, make, "digits MLP 64-256-256-10, Adam, batch 128"


def default_model_steps(seed: int = 0) -> tuple[torch.nn.Module, Callable[[torch.nn.Module], Step], str]:
    model = neurodbg.load_model(progress=False).module
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (4, 128), generator=torch.Generator().manual_seed(seed))

    def make(module: torch.nn.Module) -> Step:
        opt = torch.optim.AdamW(module.parameters(), 1e-5)

        def step() -> None:
            loss = module(input_ids=ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        step.optimizer = opt  # type: ignore[attr-defined]
        return step
    return model, make, "SmolLM2-135M fine-tuning step, AdamW, batch 4 x 128"


def timed(step: Step, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - start


def floor_hooks(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The least a hook-based watcher does per recorded step (see the module docstring)."""
    import numpy as np

    from neurodbg.train.watch import default_sites

    wrapped = neurodbg.Model(model)
    modules = dict(model.named_modules())
    params = [p for p in model.parameters() if p.requires_grad]

    def reduce(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            a = output.detach().numpy()
            np.dot(np.ones(a.shape[0], a.dtype), a)

    for site in wrapped.resolve(default_sites(wrapped)):
        modules[site.module_path].register_forward_hook(reduce)

    def norms(*_: object) -> None:
        torch.stack(torch._foreach_norm([p.grad for p in params if p.grad is not None])).tolist()

    optimizer.register_step_pre_hook(norms)


def floor(args: argparse.Namespace) -> float:
    base, make, _ = digits_steps()
    bare = copy.deepcopy(base)
    plain, hooked = make(base), make(bare)
    floor_hooks(bare, hooked.optimizer)  # type: ignore[attr-defined]
    for fn in (plain, hooked):
        timed(fn, max(2, args.steps // 4))
    return statistics.median(timed(hooked, args.steps) / timed(plain, args.steps) for _ in range(args.rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("digits", "default"), default="digits")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", default="1,10")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--floor", action="store_true", help="also time the lower bound (digits only)")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {}
    for every in (int(e) for e in args.every.split(",")):
        base, make, what = (digits_steps if args.model == "digits" else default_model_steps)()
        plain_model, watched_model = base, copy.deepcopy(base)
        plain, watched = make(plain_model), make(watched_model)
        with tempfile.TemporaryDirectory() as tmp:
            watcher = neurodbg.watch(watched_model, watched.optimizer, run=Path(tmp) / "run",  # type: ignore[attr-defined]
                                     every=every)
            with watcher:
                for fn in (plain, watched):              # warm-up
                    timed(fn, max(2, args.steps // 4))
                while watcher.step < DENSE_START:       # past the dense start-up phase
                    watched()
                ratios, plain_times = [], []
                for _ in range(args.rounds):
                    a = timed(plain, args.steps)
                    b = timed(watched, args.steps)
                    ratios.append(b / a)
                    plain_times.append(a / args.steps)
            sites = len(watcher.sites)
            path = "C++ kernel" if watcher._lean else "general path"
        results[every] = {"ratio": statistics.median(ratios), "plain_step_ms": 1000 * statistics.median(plain_times),
                          "sites": sites, "what": what, "path": path}
    if args.floor and args.model == "digits":
        results["floor"] = {"ratio": floor(args)}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    if "floor" in results:
        print(f"lower bound (bare hooks, one reduction per site, one norm call): {results.pop('floor')['ratio']:.3f}")
    for every, r in results.items():
        target = 1.10 if every == 1 else 1.02
        verdict = "meets" if r["ratio"] <= target else "MISSES"
        print(f"{r['what']}: every={every}: watched / unwatched step = {r['ratio']:.3f} (plain step "
              f"{r['plain_step_ms']:.2f} ms, {r['sites']} sites, {r['path']})  [target <= {target}: {verdict}]")


if __name__ == "__main__":
    main()
