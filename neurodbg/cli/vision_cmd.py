"""`neurodbg vision …`: images through vision models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurodbg.cli.common import JsonOpt, console, emit_json, emit_result, quiet_libraries, read_interventions

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
    intervene: Annotated[Path | None, typer.Option(help="JSON file of interventions to apply (on a convolution "
                                                        "site, neurons are channels and tokens positions).")]
    = None,
    json_out: JsonOpt = False,
) -> None:
    """Run IMAGE through a vision model and show a site's channels: max and mean per channel,
    the brightest marked; at the logits, the classes by probability."""

    from neurodbg.vision.image_trace import trace_image
    from neurodbg.vision.images import open_image
    from neurodbg.vision.zoo import open_vision_model

    picture = open_image(image)               # bad files fail before the model loads
    edits = read_interventions(intervene) if intervene else []
    quiet_libraries()
    m = open_vision_model(model, weights=weights, progress=not json_out)
    result = trace_image(m, picture, site, top=top, interventions=edits)
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


@app.command("maximize")
def maximize(
    site: Annotated[str, typer.Option("--site", "-s", help="Site whose channel (or unit) to maximise; the logits "
                                                           "with --class.")] = "logits",
    channel: Annotated[int | None, typer.Option(help="Channel (a neuron) to maximise: its mean over the map.")]
    = None,
    unit: Annotated[str | None, typer.Option(help="With --channel: one position of its map, ROW,COL (or TOKEN); "
                                                  "'centre' for the middle.")] = None,
    class_index: Annotated[int | None, typer.Option("--class", help="Class logit to maximise.")] = None,
    model: VisionModelOpt = "digits",
    weights: WeightsOpt = None,
    steps: Annotated[int, typer.Option(min=1, max=100_000, help="Gradient steps.")] = 512,
    lr: Annotated[float, typer.Option(min=1e-6, max=10.0, help="Adam learning rate on the image's spectrum.")]
    = 0.05,
    size: Annotated[int | None, typer.Option(min=4, max=1024, help="Image side (default: the model's input).")]
    = None,
    tv: Annotated[float, typer.Option(min=0.0, max=100.0, help="Total-variation penalty weight.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Random seed (start and transformations).")] = 0,
    png: Annotated[Path | None, typer.Option(help="Write the picture and the objective's curve here.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Activation maximisation: the picture a channel, a unit or a class responds to most (Fourier
    parameterisation, jitter/scale/rotation robustness, total variation, as in Lucid)."""
    from neurodbg.errors import NeurodbgError
    from neurodbg.vision.maximize import maximize as run_maximize
    from neurodbg.vision.zoo import open_vision_model

    if (channel is None) == (class_index is None):
        raise NeurodbgError("give exactly one of --channel K (with --site) or --class C")
    position = None
    if unit is not None and unit != "centre":
        try:
            position = [int(v) for v in unit.split(",")]
        except ValueError:
            raise NeurodbgError(f"--unit takes ROW,COL or a TOKEN index or 'centre', not {unit!r}") from None
    quiet_libraries()
    m = open_vision_model(model, weights=weights, progress=not json_out)
    target = "class" if class_index is not None else ("unit" if unit is not None else "channel")
    index = class_index if class_index is not None else channel
    assert index is not None
    result = run_maximize(m, site, index, target=target, position=position, steps=steps, lr=lr,  # type: ignore[arg-type]
                          size=size, tv_weight=tv, seed=seed)
    out = emit_result(result, png, json_out)
    if out is None:
        return
    console.print(f"{m.name} · {out['site']} · {target} {index}: objective {result.objective:.4g} "
                  f"(starting noise {result.start_objective:.4g}, mid-grey {result.grey_objective:.4g})",
                  markup=False)
    if "png" in out:
        console.print(f"wrote {out['png']}", markup=False)


@app.command("attribute")
def attribute(
    image: Annotated[Path, typer.Argument(help="Image file.")],
    method: Annotated[str, typer.Option(help="saliency, integrated_gradients or gradcam (through Captum).")]
    = "integrated_gradients",
    class_index: Annotated[int | None, typer.Option("--class", help="Class to explain (default: the predicted).")]
    = None,
    site: Annotated[str | None, typer.Option("--site", "-s", help="Grad-CAM's convolution site (default: the last "
                                                                  "block).")] = None,
    model: VisionModelOpt = "digits",
    weights: WeightsOpt = None,
    png: Annotated[Path | None, typer.Option(help="Write the image and its attribution map here.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Which pixels a prediction rests on."""
    from neurodbg.errors import NeurodbgError
    from neurodbg.vision.attribution import METHODS
    from neurodbg.vision.attribution import attribute as run_attribute
    from neurodbg.vision.images import open_image
    from neurodbg.vision.zoo import open_vision_model

    if method not in METHODS:
        raise NeurodbgError(f"unknown attribution method {method!r}; choose {', '.join(METHODS)}")
    picture = open_image(image)
    quiet_libraries()
    m = open_vision_model(model, weights=weights, progress=not json_out)
    result = run_attribute(m, picture, method=method, target=class_index, site=site)
    out = emit_result(result, png, json_out)
    if out is None:
        return
    gap = f", completeness gap {result.completeness_gap:.3g}" if result.completeness_gap is not None else ""
    console.print(f"{m.name}: {method} for class {result.label} (p={result.prob:.3f}; predicted "
                  f"{result.predicted}){gap}", markup=False)
    if "png" in out:
        console.print(f"wrote {out['png']}", markup=False)
