"""Validation run (issue 22, item 5): the digits mixture of experts (8 experts, top-1,
`neurodbg.train.digits_moe`) trained with Adam (3e-3) on scikit-learn's digits for several
seeds, without load balancing (600 steps), with the seeds' α·CV² loss and with the Switch
auxiliary loss (α = 0.01, 2,000 steps). Each run is watched; the table gives the findings
of `runs diagnose`, the step the collapse was found to begin, and the experts' largest and
smallest share of the tokens over the last 10 % of the records.

    .venv/bin/python bench/moe_collapse.py [--seeds 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from neurodbg.train.digits import digits_data, train
from neurodbg.train.digits_moe import balancing_loss, digits_moe
from neurodbg.train.runs import findings, read

PLAN = (("none", 600), ("cv2", 2000), ("switch", 2000))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = digits_data()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for balancing, steps in PLAN:
            for seed in range(args.seeds):
                net = digits_moe(seed=seed)
                run = Path(root) / f"{balancing}-{seed}"
                result = train(net, torch.optim.Adam(net.parameters(), 3e-3), data, steps=steps, seed=seed, run=run,
                               extra_loss=lambda net=net, b=balancing: balancing_loss(net, b, 0.01))
                router = read(run).routers["moe.router"]
                shares = router.shares(len(router.counts) - max(5, len(router.counts) // 10))
                found = findings(run)
                collapse = next((f.step for f in found if f.kind == "expert_collapse"), None)
                rows.append({"balancing": balancing, "seed": seed, "steps": steps,
                             "val_acc": round(result.val_acc, 3),
                             "max_share": round(max(shares), 3), "min_share": round(min(shares), 4),
                             "collapse_from": collapse, "findings": [f.kind for f in found]})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'balancing':9} {'seed':>4} {'val acc':>7} {'max share':>9} {'min share':>9} "
          f"{'collapse from':>13}  findings")
    for r in rows:
        print(f"{r['balancing']:9} {r['seed']:>4} {r['val_acc']:>7} {r['max_share']:>9} {r['min_share']:>9} "
              f"{r['collapse_from'] if r['collapse_from'] is not None else '-':>13}  {', '.join(r['findings']) or '-'}")


if __name__ == "__main__":
    main()
