"""Activation maximisation: start from noise and climb the gradient until a
channel's (or one unit's, or a class's) favourite picture appears.

Unregularised ascent finds high-frequency patterns no photograph has; the
regularisers that make the pictures readable are those of Lucid/Lucent (Olah et
al., "Feature Visualization", Distill 2017):

- a decorrelated parameterisation: the image lives in Fourier space, each
  frequency scaled by 1/f (so low frequencies move first), and for colour images
  in a decorrelated colour basis (ImageNet's colour correlations); a sigmoid maps
  it into [0, 1] pixels;
- transformation robustness: every step sees the image randomly jittered, scaled
  and rotated (torchvision's differentiable `affine`), so the objective cannot
  rely on one exact pixel grid;
- a total-variation penalty against speckle.

The optimisation runs in [0, 1] pixel space; the model gets what its own
preprocessing would hand it (its normalisation, read by `input_spec`). The
result states the objective reached and, for scale, the same objective on the
starting image and on mid-grey."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from neurodbg.errors import ImageError, NeuronIndexError
from neurodbg.model import Model
from neurodbg.vision.input_spec import InputSpec, input_spec

Target = Literal["channel", "unit", "class"]

# ImageNet's colour correlations, square-rooted (as in Lucid): a decorrelated colour basis
COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02],
                                  [0.27, 0.00, -0.05],
                                  [0.27, -0.09, 0.03]])


@dataclass
class Maximisation:
    model: str
    site: str
    target: Target
    index: int
    position: list[int] | None
    image: torch.Tensor                   # [C, H, W] in [0, 1]
    objective: float                      # the channel's (unit's, class's) activation on the final image
    start_objective: float                # on the starting noise
    grey_objective: float                 # on a mid-grey image
    curve: list[float] = field(default_factory=list)      # the objective every few steps

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "site": self.site, "target": self.target, "index": self.index,
                "position": self.position, "objective": self.objective, "start_objective": self.start_objective,
                "grey_objective": self.grey_objective, "size": list(self.image.shape[1:]), "curve": self.curve}

    def pixels(self) -> list[list[list[int]]]:
        """The picture as [H][W][RGB] bytes (greyscale repeated), for the web app to draw."""
        image = (self.image.clamp(0, 1) * 255).round().to(torch.uint8)
        rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
        return rgb.permute(1, 2, 0).tolist()

    def figure(self, path: str | Path) -> Path:
        from neurodbg.viz.figures import plt, save_figure

        picture = self.image.permute(1, 2, 0).numpy()
        fig, (ax, curve) = plt.subplots(1, 2, figsize=(9, 4), dpi=100, layout="constrained",
                                        gridspec_kw={"width_ratios": [1, 1.3]})
        ax.imshow(picture[..., 0] if picture.shape[2] == 1 else picture, cmap="gray" if picture.shape[2] == 1
                  else None, vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
        what = {"channel": "channel", "unit": "unit", "class": "class"}[self.target]
        ax.set_title(f"{self.site} · {what} {self.index}", fontsize=9)
        curve.plot(self.curve, color="#4c72b0")
        curve.axhline(self.grey_objective, color="#8c8c8c", linestyle="--", label="mid-grey")
        curve.axhline(self.start_objective, color="#dd8452", linestyle=":", label="starting noise")
        curve.set_xlabel("check (every 8 steps)", fontsize=8)
        curve.set_ylabel("objective", fontsize=8)
        curve.legend(fontsize=8)
        curve.set_title(f"objective {self.objective:.3g}", fontsize=9)
        fig.suptitle(f"{self.model}: activation maximisation", fontsize=10)
        return save_figure(fig, path)


class FourierImage(torch.nn.Module):
    """An image parameterised by its scaled spectrum (and, with three channels, a decorrelated
    colour basis); `forward()` gives [1, C, H, W] pixels in [0, 1]."""

    scale: torch.Tensor

    def __init__(self, channels: int, size: int, *, decay: float = 1.0, generator: torch.Generator) -> None:
        super().__init__()
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        frequency = torch.sqrt(fx * fx + fy * fy)
        self.register_buffer("scale", 1.0 / torch.clamp(frequency, min=1.0 / size) ** decay)
        shape = (1, channels, size, size // 2 + 1, 2)
        self.spectrum = torch.nn.Parameter(0.01 * torch.randn(shape, generator=generator))
        self.size = size
        self.channels = channels

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho")
        if self.channels == 3:
            basis = COLOR_CORRELATION / COLOR_CORRELATION.norm(dim=0).max()
            image = torch.einsum("nchw,dc->ndhw", image, basis.to(image))
        return torch.sigmoid(image)


def _robust(image: torch.Tensor, generator: torch.Generator, *, jitter: int, scales: tuple[float, float],
            degrees: float, functional: Any) -> torch.Tensor:
    """The image randomly jittered (by reflection padding and a random crop back), scaled and rotated
    (`functional`: torchvision's transforms.v2.functional)."""
    TF = functional
    size = image.shape[-1]
    if jitter:
        padded = torch.nn.functional.pad(image, (jitter,) * 4, mode="reflect")
        dy, dx = (int(v) for v in torch.randint(0, 2 * jitter + 1, (2,), generator=generator))
        image = padded[..., dy:dy + size, dx:dx + size]
    scale = float(scales[0] + (scales[1] - scales[0]) * torch.rand((), generator=generator))
    angle = float(degrees * (2 * torch.rand((), generator=generator) - 1))
    return TF.affine(image, angle=angle, translate=[0, 0], scale=scale, shear=[0.0, 0.0],
                     interpolation=TF.InterpolationMode.BILINEAR)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    return (image[..., 1:, :] - image[..., :-1, :]).abs().mean() + (image[..., :, 1:] - image[..., :, :-1]).abs().mean()


def _objective(model: Model, spec: InputSpec, site: str, target: Target, index: int,
               position: list[int] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """pixels [N, C, H, W] in [0, 1] -> the objective per image [N]."""
    resolved = model.site(site)

    def objective(pixels: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []            # a sink gets the site's tensor with its graph (captures detach)
        with model.trace(capture=[resolved.name], sink=lambda name, value: seen.append(value),
                         stop_early=True) as tr:
            tr.forward(spec.normalise(pixels), grad=torch.is_grad_enabled())
        value = seen[0]
        if target == "class" or value.dim() == 2:             # [N, units]
            if index >= value.shape[-1]:
                raise NeuronIndexError(f"{'class' if target == 'class' else 'unit'} {index} out of range for "
                                       f"{resolved.name} (0-{value.shape[-1] - 1})")
            return value[:, index]
        maps = value if resolved.channel_axis == 1 and value.dim() == 4 else value.transpose(1, 2)  # [N, C, ...]
        if index >= maps.shape[1]:
            raise NeuronIndexError(f"channel {index} out of range for {resolved.name} (0-{maps.shape[1] - 1})")
        channel = maps[:, index]
        if target == "channel":
            return channel.flatten(1).mean(1)
        flat_position = _flat_position(position, channel.shape[1:], resolved.name)
        return channel.flatten(1)[:, flat_position]
    return objective


def _flat_position(position: list[int] | None, shape: torch.Size, site: str) -> int:
    """A unit's position ([row, column] on a map, [token] in a sequence; default: the centre)."""
    dims = list(shape)
    if position is None:
        position = [d // 2 for d in dims]
    if len(position) != len(dims) or any(not 0 <= p < d for p, d in zip(position, dims, strict=True)):
        raise NeuronIndexError(f"position {position} out of range for {site}, whose maps are {dims}")
    flat = 0
    for p, d in zip(position, dims, strict=True):
        flat = flat * d + p
    return flat


def maximize(model: Model, site: str, index: int, *, target: Target = "channel", position: list[int] | None = None,
             steps: int = 512, lr: float = 0.05, size: int | None = None, tv_weight: float = 0.05,
             jitter: int | None = None, scales: tuple[float, float] = (0.9, 1.1), degrees: float = 5.0,
             decay: float = 1.0, seed: int = 0) -> Maximisation:
    """Gradient ascent on the input for `index` at `site`: a channel (its mean activation over the
    map), a unit (one position of a channel, `position`, default the centre) or a class (`index` at the
    logits). Deterministic for a seed on one machine."""
    if steps < 1:
        raise ImageError("steps must be at least 1")
    if target not in ("channel", "unit", "class"):
        raise ImageError(f"unknown target {target!r}; choose channel, unit or class")
    import importlib

    from neurodbg.vision.torchvision_import import import_torchvision

    import_torchvision()
    functional = importlib.import_module("torchvision.transforms.v2.functional")
    spec = input_spec(model, size=size)
    objective = _objective(model, spec, "logits" if target == "class" else site, target, index, position)
    generator = torch.Generator().manual_seed(seed)
    image = FourierImage(spec.channels, spec.size, decay=decay, generator=generator)
    shift = max(1, round(spec.size / 16)) if jitter is None else jitter
    optimiser = torch.optim.Adam(image.parameters(), lr=lr)
    was_training = model.module.training
    model.module.eval()
    frozen = [p for p in model.module.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)                  # gradients for the image only
    curve: list[float] = []
    try:
        with torch.no_grad():
            start = float(objective(image())[0])
            grey = float(objective(torch.full((1, spec.channels, spec.size, spec.size), 0.5))[0])
        for step in range(steps):
            pixels = image()
            seen = _robust(pixels, generator, jitter=shift, scales=scales, degrees=degrees, functional=functional)
            value = objective(seen)[0]
            loss = -value + tv_weight * total_variation(pixels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if step % 8 == 0 or step == steps - 1:
                curve.append(float(value.detach()))
        with torch.no_grad():
            final = image()[0].detach()
            reached = float(objective(final[None])[0])
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.module.train(was_training)
    if not math.isfinite(reached):
        raise ImageError("the optimisation diverged (non-finite objective); try a smaller lr")
    return Maximisation(model.name, site if target != "class" else "logits", target, index, position, final,
                        reached, start, grey, curve)
