"""Quality sample: LLM explainers vs the statistical one on the same neurons.

Picks `--n` random (layer, neuron, polarity) of an atlas that the statistical
explainer has described, explains them with the local embedded model
(`local:default`, all-at-once simulator) and prints both scores per neuron and
their medians. Descriptions are stored in the atlas like any other candidate.

    .venv/bin/python bench/llm_explainers.py --atlas ATLAS [--n 12] [--candidates 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import neurodbg
from neurodbg.atlas import AtlasStore, descriptions
from neurodbg.describe.chat_backends import LocalChat
from neurodbg.describe.exemplars import ExemplarReader
from neurodbg.describe.llm_explainer import LLMExplainer
from neurodbg.describe.llm_simulator import LLMSimulator
from neurodbg.describe.runner import background, describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", required=True)
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--candidates", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = neurodbg.load_model(progress=False)
    store = AtlasStore.open(args.atlas)
    reader = ExemplarReader(store)
    bg = background(store, model.tokenizer, reader)
    explainer = LLMExplainer(LocalChat(model), bg.decode, candidates=args.candidates)
    simulator = LLMSimulator(model, bg.decode)
    keys = sorted(descriptions.done(store, "stat"))
    sample = random.Random(args.seed).sample(keys, args.n)
    llm, stat = [], []
    t0 = time.perf_counter()
    for layer, neuron, polarity in sample:
        describe(store, explainer, simulator, reader=reader, layers=[layer], neurons=[neuron],
                 polarities=(polarity,), progress=False)
        found = descriptions.for_neuron(store, layer, neuron, polarity)
        best_llm = max((e for e in found if e.explainer == explainer.name and e.score is not None),
                       key=lambda e: e.score or 0, default=None)
        best_stat = next((e for e in found if e.explainer == "stat"), None)
        s_llm = best_llm.score if best_llm else None
        s_stat = best_stat.score if best_stat else None
        if s_llm is not None:
            llm.append(s_llm)
        if s_stat is not None:
            stat.append(s_stat)
        print(f"L{layer}/N{neuron}{polarity}: {explainer.name} {s_llm if s_llm is None else round(s_llm, 3)} "
              f"| stat {s_stat if s_stat is None else round(s_stat, 3)}\n"
              f"    llm:  {best_llm.text if best_llm else '-'}\n    stat: {best_stat.text if best_stat else '-'}")
    print(f"median score: {explainer.name} {statistics.median(llm):.3f} (n={len(llm)}), stat "
          f"{statistics.median(stat):.3f} (n={len(stat)}); {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
