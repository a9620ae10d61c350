"""`neurodbg moe report`: router health of a mixture-of-experts model over a corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurodbg.cli.common import JsonOpt, ModelOpt, console, emit_json, finite, load

app = typer.Typer(no_args_is_help=True, help="Mixture-of-experts models: router health.")


@app.command("report")
def report(
    corpus: Annotated[str, typer.Option(help="'default', a text/JSONL/Parquet file or dir, a datasets dir, hf:NAME.")]
    = "default",
    model: ModelOpt = "default",
    tokens: Annotated[int, typer.Option(min=1, help="Tokens of the corpus to route.")] = 16_384,
    seq_len: Annotated[int, typer.Option(min=4, help="Tokens per sequence.")] = 64,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per forward pass.")] = 8,
    capacity_factor: Annotated[float, typer.Option(parser=finite(), help="Capacity per expert, as a multiple of "
                                                                         "an even share, for the overflow rate.")]
    = 1.25,
    zombies: Annotated[bool, typer.Option("--zombies", help="Also each expert's output variance, to find "
                                                            "experts that answer with almost nothing (recomputes "
                                                            "the routed experts: about 2x their cost).")] = False,
    png: Annotated[Path | None, typer.Option(help="Write the layers x experts heatmap of shares here.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Per layer and expert: share of tokens, mean probability and weight, routing entropy,
    CV² of the loads, overflow at a capacity factor; verdicts (collapse, idle, healthy,
    imbalanced)."""
    from neurodbg.analyze.moe_report import moe_report
    from neurodbg.corpus import open_corpus

    source = open_corpus(corpus)
    m = load(model, quiet=json_out)
    result = moe_report(m, source, tokens=tokens, seq_len=seq_len, batch_size=batch_size,
                        capacity_factor=capacity_factor, zombies=zombies, progress=not json_out)
    out = result.to_dict()
    if png is not None:
        out["png"] = str(result.figure(png))
    if json_out:
        emit_json(out)
        return
    table = Table("layer", "verdicts", "largest share", "idle experts", "zombie experts", "entropy", "CV²",
                  f"overflow @{capacity_factor:g}", title=f"{result.model}: router health over {result.tokens:,} "
                                                         f"tokens of {result.corpus}")
    for layer in result.layers:
        top = max(range(layer.experts), key=lambda e: layer.shares[e])
        table.add_row(str(layer.layer), ", ".join(layer.verdicts), f"{layer.shares[top]:.1%} (expert {top})",
                      ", ".join(map(str, layer.idle)) or "-",
                      (", ".join(map(str, layer.zombies)) or "-") if zombies else "not measured",
                      f"{layer.entropy:.3f}", f"{layer.cv2:.3f}",
                      f"{layer.overflow:.1%}")
    console.print(table)
    if png is not None:
        console.print(f"wrote {out['png']}", markup=False)


@app.command("route")
def route(
    prompt: Annotated[str, typer.Argument(help="The text whose tokens to follow.")],
    model: ModelOpt = "default",
    chat: Annotated[bool, typer.Option("--chat", help="Through the model's chat template.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Which experts handled each token at each MoE layer, with their routing weights."""
    from neurodbg.analyze.moe_report import token_routes

    m = load(model, quiet=json_out)
    out = token_routes(m, prompt, chat=chat)
    if json_out:
        emit_json(out)
        return
    layers = [layer["layer"] for layer in out["tokens"][0]["layers"]] if out["tokens"] else []
    table = Table("pos", "token", *[f"L{i}" for i in layers], title=f"{out['model']}: experts per token "
                                                                    f"(weight in brackets)")
    for t in out["tokens"]:
        table.add_row(str(t["position"]), repr(t["token"]),
                      *[" ".join(f"{e}({w:.2f})" for e, w in zip(layer["experts"], layer["weights"], strict=True))
                        for layer in t["layers"]])
    console.print(table)
