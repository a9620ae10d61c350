"""`neurodbg diff A B`: the neurons that respond most differently to two inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurodbg.cli.common import JsonOpt, console, emit_result, load


def diff(
    a: Annotated[str, typer.Argument(help="First input: an image file (vision models) or a prompt.")],
    b: Annotated[str, typer.Argument(help="Second input, of the same kind.")],
    model: Annotated[str, typer.Option("--model", "-m", help="auto (digits for two image files, else the default "
                                                             "language model), or any model name or directory.")]
    = "auto",
    weights: Annotated[Path | None, typer.Option(help="Weights file for a torchvision model.")] = None,
    site: Annotated[list[str] | None, typer.Option("--site", "-s", help="Site or pattern (repeatable; default: "
                                                                        "every block of a CNN, every layer's "
                                                                        "MLP neurons of a language model).")]
    = None,
    top: Annotated[int, typer.Option(min=1, help="Neurons to list per site.")] = 10,
    reduce: Annotated[str, typer.Option(help="Summarise each neuron over positions by max or mean.")] = "max",
    include_first: Annotated[bool, typer.Option(help="Count a prompt's position 0 (the attention sink).")] = False,
    png: Annotated[Path | None, typer.Option(help="Write a bar chart of A and B side by side here.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare A and B: per site, the neurons whose activations differ most (B - A)."""
    from neurodbg.analyze.input_diff import diff_inputs
    from neurodbg.errors import NeurodbgError
    from neurodbg.vision.images import EXTENSIONS, open_image
    from neurodbg.vision.zoo import is_vision_name, open_vision_model

    if reduce not in ("max", "mean"):
        raise NeurodbgError(f"unknown reduce {reduce!r}; choose max or mean")
    looks_like_images = all(Path(x).suffix.lower() in EXTENSIONS for x in (a, b))
    chosen = ("digits" if looks_like_images else "default") if model == "auto" else model
    vision = is_vision_name(chosen) or (looks_like_images and Path(chosen).is_dir())
    if vision:
        inputs: tuple[object, object] = (open_image(a), open_image(b))    # bad files fail before the model loads
        m = open_vision_model(chosen, weights=weights, progress=not json_out)
    else:
        inputs = (a, b)
        m = load(chosen, quiet=json_out)
    result = diff_inputs(m, *inputs, site or None, top=top, reduce=reduce,  # type: ignore[arg-type]
                         include_first=include_first, labels=(a, b))
    out = emit_result(result, png, json_out)
    if out is None:
        return
    table = Table("site", f"top {top} neurons: N<index> A → B", title=f"{m.name}: A={a!r} B={b!r} ({reduce})")
    for name, rows in result.top.items():
        table.add_row(name, "  ".join(f"N{r.neuron} {r.a:.3g}→{r.b:.3g}" for r in rows))
    console.print(table, markup=False)
    if "png" in out:
        console.print(f"wrote {out['png']}", markup=False)
