"""Activation maximisation and attribution maps for vision models, each checked
against an independent computation (issue 21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from digit_pictures import first_held_out, save_digit
from PIL import Image

import neurodbg
from neurodbg.errors import ImageError, NeuronIndexError
from neurodbg.vision.attribution import attribute
from neurodbg.vision.images import batch_of
from neurodbg.vision.input_spec import input_spec
from neurodbg.vision.maximize import FourierImage, Variation, maximize

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))


@pytest.fixture(scope="module")
def digits():
    return neurodbg.load_model("digits", progress=False)


@pytest.fixture(scope="module")
def seven(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A held-out 7 of the digits as a 64x64 PNG."""
    return save_digit(first_held_out(7), tmp_path_factory.mktemp("seven") / "seven.png")


def channel_mean(model, path: str, pixels: torch.Tensor, channel: int) -> float:
    seen: list[torch.Tensor] = []
    handle = dict(model.module.named_modules())[path].register_forward_hook(lambda m, a, o: seen.append(o))
    try:
        with torch.no_grad():
            model.module(pixels)
    finally:
        handle.remove()
    return float(seen[0][0, channel].mean())


# -- activation maximisation -------------------------------------------------------------------------
def test_maximising_a_class_makes_the_model_see_it(digits) -> None:
    result = maximize(digits, "logits", 3, target="class", steps=96)
    with torch.no_grad():
        logits = digits.module(result.image[None])[0]
    assert result.objective == float(logits[3])                  # the figure is the model's own logit
    assert result.objective > result.start_objective + 10 and result.objective > result.grey_objective + 10
    assert int(logits.argmax()) == 3 and float(torch.softmax(logits, -1)[3]) > 0.9
    assert result.image.shape == (1, 8, 8) and float(result.image.min()) >= 0 and float(result.image.max()) <= 1
    again = maximize(digits, "logits", 3, target="class", steps=96)
    assert torch.equal(again.image, result.image)                 # seeded: the same picture
    for digit in range(10):                                       # every class, as the issue asks
        picture = maximize(digits, "logits", digit, target="class", steps=96).image
        with torch.no_grad():
            probs = torch.softmax(digits.module(picture[None])[0], -1)
        assert int(probs.argmax()) == digit and float(probs[digit]) >= 0.9, (digit, probs.tolist())


def test_maximising_a_channel_and_a_unit(digits) -> None:
    result = maximize(digits, "stages.1.blocks.1.out", 5, steps=64)
    assert result.objective == pytest.approx(channel_mean(digits, "stages.1.blocks.1", result.image[None], 5),
                                             rel=1e-6)
    assert result.objective > 2 * max(result.start_objective, result.grey_objective)
    unit = maximize(digits, "stages.0.blocks.0.out", 2, target="unit", position=[3, 4], steps=32)
    seen: list[torch.Tensor] = []
    handle = digits.module.stages[0].blocks[0].register_forward_hook(lambda m, a, o: seen.append(o))
    with torch.no_grad():
        digits.module(unit.image[None])
    handle.remove()
    assert unit.objective == pytest.approx(float(seen[0][0, 2, 3, 4]), rel=1e-6)


def test_maximising_on_a_colour_model_goes_through_its_normalisation() -> None:
    model = neurodbg.load_model("resnet18", progress=False)
    spec = input_spec(model, size=32)
    assert spec.channels == 3 and spec.mean == pytest.approx((0.485, 0.456, 0.406))
    result = maximize(model, "stages.1.blocks.0.out", 7, steps=8, size=32)
    normalised = spec.normalise(result.image[None])
    assert result.objective == pytest.approx(channel_mean(model, "layer2.0", normalised, 7), rel=1e-5)
    image = FourierImage(3, 16, generator=torch.Generator().manual_seed(0))().detach()
    assert image.shape == (1, 3, 16, 16) and float(image.min()) >= 0 and float(image.max()) <= 1


def test_the_small_image_shortcuts_equal_their_definitions() -> None:
    """A small image's Fourier synthesis as one matrix product equals the FFT path, and the total
    variation (matrix for small images, convolution for large ones) equals its definition by slicing."""
    for channels, size in ((1, 8), (3, 16)):
        image = FourierImage(channels, size, generator=torch.Generator().manual_seed(0))
        assert image.synthesis is not None
        with torch.no_grad():
            assert torch.allclose(image(), torch.sigmoid(image._linear(image.spectrum)), atol=1e-6)
    assert FourierImage(3, 64, generator=torch.Generator().manual_seed(0)).synthesis is None
    for channels, size, small in ((1, 8, True), (3, 16, True), (3, 64, False)):
        variation = Variation(channels, size, 0.05)
        assert (variation.matrix is not None) == small
        x = torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(1))
        across = (x[..., :-1, 1:] - x[..., :-1, :-1]).abs().mean()
        down = (x[..., 1:, :-1] - x[..., :-1, :-1]).abs().mean()
        assert float(variation(x)) == pytest.approx(0.05 * float(across + down), rel=1e-5)


def _definition_loss(image: FourierImage, spectrum: torch.Tensor, grid: torch.Tensor, weight: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's view and loss from the definitions: the FFT synthesis, `grid_sample` with reflection,
    the total variation by slicing, and a nonlinear stand-in objective."""
    pixels = torch.sigmoid(image._linear(spectrum))
    seen = torch.nn.functional.grid_sample(pixels, grid[None], mode="bilinear", padding_mode="reflection",
                                           align_corners=False)
    across = (pixels[..., :-1, 1:] - pixels[..., :-1, :-1]).abs().mean()
    down = (pixels[..., 1:, :-1] - pixels[..., :-1, :-1]).abs().mean()
    return seen, 0.05 * (across + down) - torch.tanh(seen * weight).sum()


@pytest.mark.parametrize("channels", [1, 3])
def test_the_small_image_step_equals_autograd_through_the_definitions(channels: int) -> None:
    """A small image's step outside autograd (`SmallAscent`: its view as matrix products, the loss's
    gradient by hand) gives the view and the spectrum's gradient that autograd gives through the
    definitions; the C++ kernel's steps, Adam included, follow the tensor operations' with torch's Adam."""
    from neurodbg.vision.adam_step import AdamStep
    from neurodbg.vision.maximize import transform_grids
    from neurodbg.vision.small_ascent import KERNEL, SmallAscent

    generator = torch.Generator().manual_seed(3)
    image = FourierImage(channels, 8, generator=generator)
    with torch.no_grad():
        image.spectrum.mul_(100)        # pixels well away from mid-grey, differences of both signs
    variation = Variation(channels, 8, 0.05)
    grids = transform_grids(6, channels, 8, generator, jitter=1, scales=(0.8, 1.2), degrees=20)
    weight = torch.randn((1, channels, 8, 8), generator=generator)

    def objective_gradient(seen: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(torch.tanh(seen * weight).sum(), seen)[0]

    small = SmallAscent.of(image.synthesis, variation.matrix, image.spectrum, channels, 8,
                           AdamStep(image.spectrum, 0.05), 64)
    assert small is not None
    small.kernel = None                 # the tensor operations
    small.views(grids)
    for step in range(len(grids)):
        spectrum = image.spectrum.detach().clone().requires_grad_(True)
        seen_ref, loss = _definition_loss(image, spectrum, grids[step], weight)
        (expected,) = torch.autograd.grad(loss, spectrum)
        seen = small.model_input(step)
        assert torch.allclose(seen, seen_ref, atol=1e-6)
        got = small.gradient(step, objective_gradient(seen))
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-4), float((got - expected).abs().max())

    # the kernel against the tensor operations (and torch.optim.Adam), six steps from one start
    module = KERNEL.load()
    start = image.spectrum.detach().clone()
    spectra = [torch.nn.Parameter(start.clone()) for _ in range(3)]
    by_ops = SmallAscent(image.synthesis, variation.matrix, spectra[0], channels, 8, AdamStep(spectra[0], 0.05))
    by_kernel = SmallAscent(image.synthesis, variation.matrix, spectra[1], channels, 8, AdamStep(spectra[1], 0.05),
                            kernel=module)
    adam = torch.optim.Adam([spectra[2]], lr=0.05, fused=True)
    for ascent in (by_ops, by_kernel):
        ascent.views(grids)
    for step in range(len(grids)):
        seen_ops, seen_kernel = by_ops.model_input(step), by_kernel.model_input(step)
        assert torch.allclose(seen_kernel, seen_ops, atol=1e-6)
        grad_input = objective_gradient(seen_ops)
        spectra[2].grad = by_ops.gradient(step, grad_input)
        adam.step()
        by_ops.step(step, grad_input)
        by_kernel.step(step, objective_gradient(seen_kernel))
        assert torch.equal(spectra[0], spectra[2])         # the same fused update kernel
        assert torch.allclose(spectra[1], spectra[0], atol=1e-5), float((spectra[1] - spectra[0]).abs().max())
        assert not torch.equal(spectra[1], start)


def test_maximisation_bad_input(digits) -> None:
    with pytest.raises(NeuronIndexError, match="channel 64 out of range"):
        maximize(digits, "stages.1.blocks.1.out", 64, steps=1)
    with pytest.raises(NeuronIndexError, match="class 10 out of range"):
        maximize(digits, "logits", 10, target="class", steps=1)
    with pytest.raises(NeuronIndexError, match=r"position \[9, 0\] out of range"):
        maximize(digits, "stem", 0, target="unit", position=[9, 0], steps=1)
    with pytest.raises(ImageError, match="steps must be at least 1"):
        maximize(digits, "stem", 0, steps=0)


# -- attribution maps (Captum) against hand-computed ones ---------------------------------------------
def test_saliency_equals_the_input_gradient(digits, seven) -> None:
    result = attribute(digits, seven, method="saliency")
    x = batch_of(digits, [seven]).requires_grad_(True)
    digits.module(x)[0, 7].backward()
    assert result.predicted == 7 and result.target == 7
    assert torch.equal(result.map, x.grad[0].abs().amax(0))


def test_integrated_gradients_are_complete(digits, seven) -> None:
    result = attribute(digits, seven, method="integrated_gradients", steps=128)
    x = batch_of(digits, [seven])
    with torch.no_grad():
        gain = float(digits.module(x)[0, 7] - digits.module(torch.zeros_like(x))[0, 7])
    assert float(result.map.sum()) == pytest.approx(gain, abs=0.02 * abs(gain))
    assert result.completeness_gap is not None and abs(result.completeness_gap) < 0.02 * abs(gain)


def test_gradcam_equals_its_definition(digits, seven) -> None:
    result = attribute(digits, seven, method="gradcam", target=1)
    assert result.site == "stages.1.blocks.1.out" and result.target == 1
    x = batch_of(digits, [seven])
    seen: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        output.retain_grad()
        seen.append(output)

    handle = digits.module.stages[1].blocks[1].register_forward_hook(keep)
    try:
        digits.module(x)[0, 1].backward()
    finally:
        handle.remove()
    maps, grads = seen[0], seen[0].grad
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * maps).sum(1, keepdim=True))
    want = torch.nn.functional.interpolate(cam, size=(8, 8), mode="bilinear")[0, 0]
    assert torch.allclose(result.map, want, atol=1e-6)


def test_attribution_bad_input(digits, seven) -> None:
    with pytest.raises(NeuronIndexError, match="class 12 out of range"):
        attribute(digits, seven, target=12)
    with pytest.raises(ImageError, match="unknown attribution method"):
        attribute(digits, seven, method="lime")  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="convolution site"):
        attribute(digits, seven, method="gradcam", site="logits")


# -- the command line ---------------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([NEURODBG, *args], capture_output=True, text=True, env=env, timeout=300, check=False)


def test_cli_maximize_and_attribute(digits, seven, tmp_path: Path) -> None:
    r = cli("vision", "maximize", "--class", "3", "--steps", "48", "--json", "--png", str(tmp_path / "m.png"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["target"] == "class" and out["objective"] > out["grey_objective"]
    assert Image.open(out["png"]).format == "PNG"
    r = cli("vision", "attribute", str(seven), "--method", "saliency", "--json", "--png", str(tmp_path / "a.png"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["predicted"] == 7 and Image.open(tmp_path / "a.png").format == "PNG"
    for args, message in ((["vision", "maximize", "--class", "3", "--channel", "1"], "exactly one of"),
                          (["vision", "maximize", "--site", "stem", "--channel", "99", "--steps", "1"],
                           "channel 99 out of range"),
                          (["vision", "attribute", str(seven), "--method", "lime"], "unknown attribution method")):
        r = cli(*args)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
