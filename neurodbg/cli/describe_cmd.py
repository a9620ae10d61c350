"""`neurodbg describe` and `neurodbg search`: explain neurons in words, find them by meaning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurodbg.cli.common import JsonOpt, console, emit_json, finite, int_list, quiet_libraries
from neurodbg.errors import NeurodbgError

AtlasOpt = Annotated[Path, typer.Option(help="Atlas directory (made by `neurodbg scan`).")]


def describe(
    atlas: AtlasOpt,
    explainer: Annotated[str, typer.Option(help="stat, local:MODEL (e.g. local:default) or openai:MODEL.")] = "stat",
    layers: Annotated[str | None, typer.Option(help="Layers, like 0-5 or 3,7 (default: all).")] = None,
    neurons: Annotated[str | None, typer.Option(help="Neuron indices, like 0-99 (default: all).")] = None,
    polarity: Annotated[str, typer.Option(help="+, - or both.")] = "both",
    candidates: Annotated[int, typer.Option(min=1, help="Candidates drawn per neuron (LLM explainers).")] = 1,
    api_base: Annotated[str | None, typer.Option(help="openai: base URL (or NEURODBG_OPENAI_BASE_URL).")] = None,
    api_key: Annotated[str | None, typer.Option(help="openai: key (or NEURODBG_OPENAI_API_KEY/OPENAI_API_KEY).")]
    = None,
    timeout: Annotated[float, typer.Option(parser=finite(0.1), help="openai: seconds per request.")] = 60.0,
    simulator_model: Annotated[str, typer.Option(help="Local model scoring LLM descriptions.")] = "default",
    embed: Annotated[bool, typer.Option(help="Embed new descriptions for search now (else at first search).")]
    = True,
    scoring: Annotated[str, typer.Option(help="Scores besides simulation: simulation,detection,fuzzing (comma-"
                                              "separated).")] = "simulation,detection,fuzzing",
    baselines: Annotated[bool, typer.Option(help="Also score each neuron with another neuron's description "
                                                 "(the shuffled baseline).")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Explain every neuron (both polarities) in words, score each explanation by how well
    it predicts held-out activations, and store it in the atlas. Reruns skip what is done."""
    from neurodbg.describe.explainers import LLMOptions
    from neurodbg.describe.runner import describe_atlas

    if polarity not in ("+", "-", "both"):
        raise NeurodbgError(f"polarity must be +, - or both (got {polarity!r})")
    quiet_libraries()
    options = LLMOptions(candidates=candidates, api_base=api_base, api_key=api_key, timeout=timeout,
                         simulator_model=simulator_model)
    data = describe_atlas(atlas, explainer, options=options, layers=int_list(layers, "layers"),
                          neurons=int_list(neurons, "neurons"),
                          polarities=("+", "-") if polarity == "both" else (polarity,), embed=embed,
                          progress=not json_out, scoring=[m.strip() for m in scoring.split(",") if m.strip()],
                          baselines=baselines)
    if json_out:
        emit_json(data)
        return
    console.print(f"described {data['described']:,} (skipped {data['skipped']:,} already done) with "
                  f"{data['explainer']} in {data['seconds']:.1f} s ({data['per_second']:.1f}/s); scores: median "
                  f"{data['median_score']}, ≥0.5: {data['share_ge_0.5']}, ≥0.8: {data['share_ge_0.8']}", markup=False)
    for method, figures in data.get("scores", {}).items():
        shuffled = figures.pop("shuffled") or {}
        console.print(f"  {method}: " + ", ".join(f"{k} {v} (shuffled {shuffled.get(k)})" for k, v in figures.items()),
                      markup=False)


def search(
    query: Annotated[str, typer.Argument(help="What to look for, e.g. 'Bible verses' or 'dates'.")],
    atlas: AtlasOpt,
    k: Annotated[int, typer.Option(min=1, help="Results.")] = 50,
    layers: Annotated[str | None, typer.Option(help="Layers: a list, ranges or both, like 1,5,9 or 5-12 or 0-3,7.")]
    = None,
    polarity: Annotated[str | None, typer.Option(help="+ or - (default: both).")] = None,
    min_score: Annotated[float | None, typer.Option(parser=finite(),
                                                    help="Only descriptions scored at least this.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Find neurons whose descriptions mean what the query says (exact cosine search)."""
    from neurodbg.atlas.store import AtlasStore
    from neurodbg.search.atlas_search import AtlasSearch

    chosen = int_list(layers, "layers")
    quiet_libraries()
    hits = AtlasSearch(AtlasStore.open(atlas)).search(query, k, layers=chosen, polarity=polarity, min_score=min_score)
    if json_out:
        emit_json([h.to_dict() for h in hits])
        return
    for h in hits:
        score = "n/a" if h.score is None else f"{h.score:.2f}"
        console.print(f"{h.id:>12}  sim {h.similarity:.3f}  score {score:>5}  {h.text}", markup=False)
