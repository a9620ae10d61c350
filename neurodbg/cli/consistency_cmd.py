"""`neurodbg consistency`: sample an answer several times, vote, and show the fork (`analyze.consistency`)."""

from __future__ import annotations

from typing import Annotated

import typer

from neurodbg.cli.common import (
    JsonOpt,
    ModelOpt,
    SeedOpt,
    TemperatureOpt,
    TopKOpt,
    TopPOpt,
    console,
    emit_json,
    load,
)


def consistency(
    prompt: Annotated[str, typer.Argument(help="The question.")],
    samples: Annotated[int, typer.Option(min=1, max=256, help="How many answers to sample.")] = 10,
    extract: Annotated[str, typer.Option(help="number, choice or regex:PATTERN")] = "number",
    temperature: TemperatureOpt = 0.7,
    top_k: TopKOpt = 50,
    top_p: TopPOpt = 0.95,
    seed: SeedOpt = 0,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=512)] = 32,
    triage: Annotated[float | None, typer.Option(help="Answer greedily when every greedy token's probability "
                                                      "is at least this (e.g. 0.9); sample otherwise.")] = None,
    chat: Annotated[bool, typer.Option(help="Wrap the prompt in the chat template.")] = False,
    model: ModelOpt = "default",
    json_out: JsonOpt = False,
) -> None:
    """Self-consistency: the answers, the vote, the agreement and entropy, and where the samples fork."""
    from neurodbg.analyze.consistency import consistency as run
    from neurodbg.analyze.consistency import extractor
    from neurodbg.analyze.sampling import Sampling

    extractor(extract)                       # a bad mode is refused before the model loads
    settings = Sampling(temperature, top_k, top_p, seed)
    settings.check()
    m = load(model, quiet=json_out)
    result = run(m, prompt, samples=samples, extract=extract, sampling=settings, max_new_tokens=max_new_tokens,
                 chat=chat, triage=triage)
    if json_out:
        emit_json(result.to_dict())
        return
    if result.mode == "direct":
        console.print(f"answered directly (every greedy token ≥ {triage}; lowest {result.confidence:.3f}): "
                      f"{result.vote!r}", markup=False)
        return
    for answer, text in zip(result.answers, result.texts, strict=True):
        console.print(f"{answer!s:>12}  <- {text!r}", markup=False)
    console.print(f"vote: {result.vote!r}, agreement {result.agreement:.0%}, entropy {result.entropy:.2f} bits; "
                  f"votes {result.votes}", markup=False)
    fork = result.fork
    if fork is not None:
        console.print(f"first fork after {fork.prefix!r} (position {fork.position}): "
                      + ", ".join(f"{b['token']!r} p={b['probability']:.3f} ({b['samples']} samples)"
                                  for b in fork.branches), markup=False)
        if fork.neurons:
            console.print("neurons for the majority over the minority branch: "
                          + ", ".join(f"{n['id']} {n['value']:+.3f}" for n in fork.neurons[:10]), markup=False)
