"""`neurodbg analyze` and `neurodbg steer`: the Monitor from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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
    finite,
    load,
)
from neurodbg.errors import InterventionError, NeurodbgError

AtlasOpt = Annotated[Path | None, typer.Option(help="Atlas directory (descriptions, quantiles).")]
ChatOpt = Annotated[bool, typer.Option(help="Wrap the prompt in the model's chat template.")]


def _monitor(model: str, atlas: Path | None, quiet: bool) -> Any:
    from neurodbg.analyze.monitor import Monitor

    return Monitor(load(model, quiet=quiet), atlas)


def analyze(
    prompt: Annotated[str, typer.Argument(help="The prompt (or the user's chat message with --chat).")],
    target: Annotated[str | None, typer.Option(help="The next token to explain, e.g. ' bigger' (default: "
                                                    "the model's top prediction).")] = None,
    atlas: AtlasOpt = None,
    model: ModelOpt = "default",
    mode: Annotated[str, typer.Option(help="attribution or activation.")] = "attribution",
    position: Annotated[int | None, typer.Option(help="Position whose next token is explained (default: last).")]
    = None,
    top: Annotated[int, typer.Option(min=1, help="Neurons to report.")] = 100,
    rank: Annotated[str, typer.Option(help="attribution: abs, pos (raise the target) or neg.")] = "abs",
    include_template: Annotated[bool, typer.Option(help="Count chat-template tokens too.")] = False,
    threshold: Annotated[float, typer.Option(parser=finite(0.0, 2.0), help="Cluster cut: cosine distance.")] = 0.6,
    label_with: Annotated[str | None, typer.Option(help="Also label and rate (1-7) clusters with local:MODEL "
                                                        "or openai:MODEL.")] = None,
    api_base: Annotated[str | None, typer.Option(help="openai: base URL for --label-with.")] = None,
    min_coherence: Annotated[float | None, typer.Option(parser=finite(), help="Hide clusters less coherent "
                                                        "than this (0-1).")] = None,
    max_rating: Annotated[int | None, typer.Option(help="With --label-with: hide clusters the LLM rated above "
                                                   "this (1-7; the seeds show <= 3).")] = None,
    chat: ChatOpt = False,
    show: Annotated[int, typer.Option(min=0, help="Neurons printed (all go to --json).")] = 20,
    json_out: JsonOpt = False,
) -> None:
    """Which neurons are behind a token, with their descriptions, grouped into concepts."""
    monitor = _monitor(model, atlas, json_out)
    if mode not in ("attribution", "activation"):
        raise NeurodbgError(f"unknown mode {mode!r}; choose attribution or activation")
    if rank not in ("abs", "pos", "neg"):
        raise NeurodbgError(f"rank must be abs, pos or neg (got {rank!r})")
    backend = None
    if label_with is not None:
        from neurodbg.analyze.cluster_labels import chat_backend

        backend = chat_backend(label_with, api_base=api_base)
    result = monitor.analyze(prompt, target=target, position=position, chat=chat, mode=mode, top=top,
                             include_template=include_template, rank=rank, threshold=threshold,
                             label_with=backend, min_coherence=min_coherence, max_rating=max_rating)
    data = result.to_dict()
    if json_out:
        emit_json(data)
        return
    console.print(f"next token after position {data['position']} ({data['tokens'][data['position']]!r}): "
                  f"{data['target_token']!r}, log p = {data['logprob']:.3f}; mode {data['mode']}", markup=False)
    for c in data["clusters"]:
        llm = f" [LLM: {c['llm_label']}, rated {c.get('rating') or '?'}]" if c.get("llm_label") else ""
        flag = f" PROBABLY SPURIOUS ({', '.join(c['reasons'])})" if c["spurious"] else ""
        console.print(f"cluster ({c['size']} neurons, coherence {c['coherence']:.2f} vs random "
                      f"{c['baseline']:.2f}, total {c['total']:+.3f}): {c['label']}{llm}{flag}", markup=False)
    if data["hidden_clusters"]:
        console.print(f"({data['hidden_clusters']} clusters hidden by --min-coherence/--max-rating)", markup=False)
    for f in data["neurons"][:show]:
        desc = f["description"] or "(no description)"
        score = "" if f["score"] is None else f" [score {f['score']:.2f}]"
        console.print(f"{f['id']:>12} {f['value']:+9.4f} at {f['position']:>3}  {desc}{score}", markup=False)


def steer(
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    atlas: AtlasOpt = None,
    model: ModelOpt = "default",
    query: Annotated[str | None, typer.Option(help="Steer the neurons whose descriptions match this.")] = None,
    neurons: Annotated[str | None, typer.Option(help="Or name them: L5/N12,L7/N3- .")] = None,
    k: Annotated[int, typer.Option(min=1, help="Neurons taken from the query.")] = 50,
    polarity: Annotated[str | None, typer.Option(help="Query only + or - descriptions.")] = None,
    min_score: Annotated[float | None, typer.Option(parser=finite(),
                                                    help="Query only descriptions scored at least this.")] = None,
    value: Annotated[float, typer.Option(parser=finite(), help="λ × each neuron's tail quantile (0 ablates).")] = 0.0,
    level: Annotated[float, typer.Option(parser=finite(0.0, 1.0), help="The tail quantile λ is relative to.")] = 1e-4,
    tokens: Annotated[str, typer.Option(help="prompt, generated or all.")] = "all",
    sides: Annotated[str, typer.Option(help="selected: clamp each neuron only where its activation has the "
                                            "selected polarity (the seeds); both: on both sides.")] = "selected",
    seeds: Annotated[str | None, typer.Option(help="The seeds' recipe for this spec: suppress (λ 0) or boost "
                                                   "(λ 0.5) × the 1e-5 quantile, on the prompt's tokens; "
                                                   "overrides --value, --level and --tokens.")] = None,
    spec: Annotated[list[Path] | None, typer.Option("--spec", help="A steering spec as JSON (one object, or a "
                                                                   "list run together); repeatable, and run with "
                                                                   "--query/--neurons when given.")] = None,
    target: Annotated[str | None, typer.Option(help="Report this next token's log-prob change.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=512)] = 20,
    replay: Annotated[Path | None, typer.Option(help="Replay a saved spec (interventions JSON).")] = None,
    save: Annotated[Path | None, typer.Option(help="Save the resolved spec (interventions JSON) here.")] = None,
    chat: ChatOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Clamp concepts' neurons to λ × their tail quantile; generate with and without."""
    from neurodbg.analyze.steering import SteeringSpec, parse_spec, seeds_spec
    from neurodbg.trace.interventions import dumps, loads

    if replay is not None:
        try:
            interventions_text = replay.read_text()
        except OSError as exc:
            raise InterventionError(f"cannot read {replay}: {exc.strerror}") from None
        monitor = _monitor(model, atlas, json_out)
        interventions = loads(interventions_text)
    else:
        if tokens not in ("prompt", "generated", "all"):
            raise NeurodbgError(f"--tokens must be prompt, generated or all (got {tokens!r})")
        specs: list[SteeringSpec] = [one for path in spec or [] for one in _read_specs(path)]
        if query or neurons:
            fields = {"neurons": neurons.split(",") if neurons else None, "query": query, "k": k,
                      "polarity": polarity, "min_score": min_score, "sides": sides}
            specs.append(seeds_spec(seeds, **fields) if seeds is not None  # type: ignore[arg-type]
                         else parse_spec({**fields, "value": value, "level": level, "tokens": tokens}))
        if not specs:
            raise NeurodbgError("name what to steer: --query, --neurons, --spec FILE or --replay FILE")
        monitor = _monitor(model, atlas, json_out)
        interventions = monitor.steering(specs)
    if save is not None:
        save.write_text(dumps(interventions) + "\n")
    result = monitor.steer(prompt, interventions, target=target, chat=chat, max_new_tokens=max_new_tokens)
    data = result.to_dict()
    if json_out:
        emit_json(data)
        return
    share = "" if data["share"] is None else f" ({100 * data['share']:.3f}% of all {data['total_neurons']:,})"
    console.print(f"steered {data['neurons']} neurons{share} with {len(interventions)} interventions", markup=False)
    console.print(f"before: {json.dumps(data['baseline'], ensure_ascii=False)}", markup=False)
    console.print(f"after:  {json.dumps(data['steered'], ensure_ascii=False)}", markup=False)
    if data["delta_logprob"] is not None:
        console.print(f"log p({target!r}): {data['baseline_logprob']:.4f} -> {data['steered_logprob']:.4f} "
                      f"(Δ {data['delta_logprob']:+.4f})", markup=False)


def _read_specs(path: Path) -> list[Any]:
    """The steering specs in a JSON file: one object, or a list of them."""
    from neurodbg.analyze.steering import parse_spec

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NeurodbgError(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NeurodbgError(f"{path} is not JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise NeurodbgError(f"{path} holds no steering spec")
    return [parse_spec(item) for item in items]


def tokens(
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    model: ModelOpt = "default",
    k: Annotated[int, typer.Option(min=1, max=50, help="Next-token candidates per position.")] = 5,
    generate: Annotated[int, typer.Option(min=0, max=512, help="Also generate this many tokens.")] = 0,
    sample: Annotated[bool, typer.Option(help="Generate by sampling (--temperature, --top-k, --top-p, --seed) "
                                              "instead of greedily.")] = False,
    temperature: TemperatureOpt = 0.7,
    top_k: TopKOpt = 50,
    top_p: TopPOpt = 0.95,
    seed: SeedOpt = 0,
    chat: ChatOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Token view: at every position (prompt, and generated with --generate), the top-k next tokens."""
    from neurodbg.analyze.sampling import Sampling

    sampling = Sampling(temperature, top_k, top_p, seed) if sample else None
    if sampling is not None:
        sampling.check()                     # refused before the model loads
    monitor = _monitor(model, None, json_out)
    if generate:
        positions, start = monitor.generate(prompt, chat=chat, k=k, max_new_tokens=generate, sampling=sampling)
    else:
        positions, start = monitor.tokens(prompt, chat=chat, k=k), None
    if json_out:
        emit_json({"generated_from": start, "positions": [p.to_dict() for p in positions]})
        return
    for p in positions:
        mark = "*" if start is not None and p.index >= start else " "
        top = ", ".join(f"{t['token']!r} {t['prob']:.3f}" for t in p.to_dict()["top"])
        console.print(f"{mark}{p.index:>4} {p.token!r:<16} -> {top}", markup=False)
