"""Benchmark (issue 23): linear probes at every layer of the default model (30
`resid_out` sites) for ~1,000 labelled prompts ÷ the plain forward passes they need
(one per prompt, the same token ids, no trace). The probe's time is the capture of
every site at each prompt's last token plus the cross-validated fits (5 folds x 30
layers), without the direction's effect (`effect_prompts=0`); both classifiers are
timed. Target: ≤ 1.2 x the forward passes.

    .venv/bin/python bench/probes.py [--prompts 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import random

import torch
from timing import timed  # bench/timing.py (scripts run from bench/)

import neurodbg
from neurodbg.analyze.probe_data import ProbeData, example_set
from neurodbg.analyze.probes import probe, prompt_features


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = neurodbg.load_model("default", progress=False)
    pool = example_set("sources", per_class=args.prompts // 2)
    # a seeded mix of the three sources (the language reference has fewer documents), --prompts in all
    keep = sorted(random.Random(0).sample(range(len(pool.texts)), min(args.prompts, len(pool.texts))))
    data = ProbeData("example:sources", [pool.texts[i] for i in keep], [pool.labels[i] for i in keep])
    ids = [model.encode(t) for t in data.texts]
    sites = [s.name for s in model.resolve("layers.*.resid_out")]

    def plain() -> None:
        for one in ids:
            model.module(one)

    plain()                                           # warm-up
    t_plain = timed(plain)
    t_capture = timed(lambda: prompt_features(model, data.texts, sites, progress=False))
    t_logistic = timed(lambda: probe(model, data, effect_prompts=0, progress=False))
    t_ridge = timed(lambda: probe(model, data, effect_prompts=0, classifier="ridge", progress=False))
    out = {"prompts": len(data.texts), "classes": data.counts(), "plain_s": round(t_plain, 2),
           "capture_ratio": round(t_capture / t_plain, 3), "logistic_ratio": round(t_logistic / t_plain, 3),
           "ridge_ratio": round(t_ridge / t_plain, 3)}
    if args.json:
        print(json.dumps(out))
        return
    print(f"{out['prompts']} prompts {out['classes']}; plain forwards {t_plain:.1f} s")
    print(f"capture of 30 sites at the last token ÷ plain: {out['capture_ratio']}")
    print(f"probe, logistic (capture + 150 cross-validated fits) ÷ plain: {out['logistic_ratio']}")
    print(f"probe, ridge ÷ plain: {out['ridge_ratio']}   (target ≤ 1.2)")


if __name__ == "__main__":
    main()
