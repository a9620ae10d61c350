"""`neurodbg vision …`: images through vision models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurodbg.cli.common import JsonOpt, console, emit_json, quiet_libraries

app = typer.Typer(no_args_is_help=True, help="Vision models: trace an image, see its feature maps.")

VisionModelOpt = Annotated[str, typer.Option("--model", "-m", help="digits (embedded), a torchvision name such as "
                                                                   "resnet18, or a Hugging Face model directory.")]
WeightsOpt = Annotated[Path | None, typer.Option(help="Weights file (.pth) for a torchvision model; without it "
                                                      "the weights are random (seeded).")]


@app.command("trace")
def trace(
    image: Annotated[Path, typer.Argument(help="Image file (PNG, JPEG, ...).")],
    model: VisionModelOpt = "digits",
    weights: WeightsOpt = None,
    site: Annotated[str, typer.Option("--site", "-s", help="Site: stem, stages.{s}.blocks.{b}.out, pool, logits, "
                                                           "or a raw path like layer1.0:output.")] = "logits",
    top: Annotated[int, typer.Option(min=1, help="Channels (and classes) to list.")] = 10,
    channel: Annotated[int | None, typer.Option(help="Channel to lay over the image (default: the brightest).")]
    = None,
    png: Annotated[Path | None, typer.Option(help="Write the figure (image, overlay, channel maxima, feature "
                                                  "maps) here.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run IMAGE through a vision model and show a site's channels: max and mean per channel,
    the brightest marked; at the logits, the classes by probability."""
    from neurodbg.vision.image_trace import trace_image
    from neurodbg.vision.images import open_image
    from neurodbg.vision.zoo import open_vision_model

    picture = open_image(image)               # a bad file fails before the model loads
    quiet_libraries()
    m = open_vision_model(model, weights=weights, progress=not json_out)
    result = trace_image(m, picture, site, top=top)
    out = result.to_dict()
    if png:
        out["png"] = str(result.figure(png, channel=channel))
    if json_out:
        emit_json(out)
        return
    table = Table("channel", "max", "mean", "peak", title=f"{m.name} · {result.site} {result.shape} "
                                                          f"(brightest: {result.brightest})")
    for row in out["top"]:
        table.add_row(str(row["channel"]), f"{row['max']:.4g}", f"{row['mean']:.4g}", str(row["peak"]))
    console.print(table, markup=False)
    if "classes" in out:
        console.print("classes: " + ", ".join(f"{c['label']} {c['prob']:.3f}" for c in out["classes"]),
                      markup=False)
    if "png" in out:
        console.print(f"wrote {out['png']}", markup=False)
