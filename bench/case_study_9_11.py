"""Case study (README): "Which is bigger, 9.11 or 9.9?" on the default model.

The prompt ends right where the model must choose between 9.11 (wrong) and 9.9
(right): "Q: ... A: 9." -> next token "1" or "9"; the model prefers "1". We explain
the wrong token by attribution, group the neurons into concepts, then ablate
(λ = 0) and boost (λ = 2) each concept and measure the logit difference
logit("9") - logit("1") (right minus wrong).

    .venv/bin/python bench/case_study_9_11.py --atlas ATLAS [--top 300]
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np

import neurodbg
from neurodbg.analyze.monitor import Monitor
from neurodbg.analyze.prompt import single_token
from neurodbg.analyze.steering import SteeringSpec, target_logprob

PROMPT = "Q: Which number is bigger, 9.11 or 9.9?\nA: 9."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", required=True)
    parser.add_argument("--top", type=int, default=300)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--sides", choices=["selected", "both"], default="selected",
                        help="clamp each neuron on its selected side only (the seeds; the default since "
                             "2026-12-05) or on both sides (the README's table was measured so)")
    args = parser.parse_args()

    model = neurodbg.load_model(progress=False)
    monitor = Monitor(model, args.atlas)
    prompt = monitor.prompt(PROMPT)
    right, wrong = single_token(model, "9"), single_token(model, "1")

    def diff(edits: list) -> float:
        return target_logprob(model, prompt, right, edits) - target_logprob(model, prompt, wrong, edits)

    base = diff([])
    print(json.dumps({"prompt": PROMPT, "top_next": monitor.tokens(PROMPT, k=3)[-1].to_dict()["top"],
                      "logit_diff_right_minus_wrong": round(base, 4)}))
    analysis = monitor.analyze(PROMPT, target="1", mode="attribution", top=args.top, rank="pos")
    findings = analysis.report.findings
    print(json.dumps({"neurons": len(findings), "clusters": len(analysis.clusters)}))
    for c in analysis.clusters[: args.clusters]:
        ids = [findings[i].id for i in c.members]
        row = {"label": c.label, "size": len(ids), "coherence": round(c.coherence, 3),
               "random_groups": None if c.baseline is None else round(c.baseline, 3), "spurious": c.reasons,
               "median_score": round(float(np.median([findings[i].score or 0.0 for i in c.members])), 3),
               "attribution_to_wrong": round(c.total, 4), "example_ids": ids[:5]}
        for name, value in (("ablate", 0.0), ("boost_x2", 2.0)):
            edits = monitor.steering(SteeringSpec(neurons=ids, value=value, tokens="all", sides=args.sides))
            row[f"logit_diff_{name}"] = round(diff(edits), 4)
        print(json.dumps(row))
    all_ids = [f.id for f in findings]
    edits = monitor.steering(SteeringSpec(neurons=all_ids, value=0.0, tokens="all", sides=args.sides))
    print(json.dumps({"ablate_all_top_neurons": len(all_ids), "logit_diff": round(diff(edits), 4)}))
    # control: as many random neurons, ablated the same way
    rng = random.Random(0)
    for trial in range(3):
        picks = [f"L{rng.randrange(monitor.model.n_layers)}/N{rng.randrange(1536)}" for _ in all_ids]
        control = monitor.steering(SteeringSpec(neurons=picks, value=0.0, tokens="all", sides=args.sides))
        print(json.dumps({"control_ablate_random_neurons": len(picks), "trial": trial,
                          "logit_diff": round(diff(control), 4)}))
    result = monitor.steer(PROMPT, edits, target="9", max_new_tokens=12)
    print(json.dumps({"baseline_continuation": result.baseline_text, "ablated_continuation": result.steered_text}))


if __name__ == "__main__":
    main()
