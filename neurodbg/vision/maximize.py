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
  and rotated — one sampling grid per step, drawn 64 steps at a time, and one
  differentiable `grid_sample` reflecting at the border — so the objective cannot
  rely on one exact pixel grid;
- a total-variation penalty against speckle (over the image's 2x2 neighbourhoods:
  one matrix product for a small image, one convolution for a large one).

A small image (up to 16x16) takes the same steps with autograd through the model
only: its view and the loss's gradient on the spectrum as matrix products
(small_ascent.py, one C++ call each where that kernel is built).

The optimisation runs in [0, 1] pixel space; the model gets what its own
preprocessing would hand it (its normalisation, read by `input_spec`). The
result states the objective reached and, for scale, the same objective on the
starting image and on mid-grey."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from neurodbg.errors import ImageError, NeuronIndexError
from neurodbg.model import Model
from neurodbg.vision.adam_step import AdamStep
from neurodbg.vision.input_spec import InputSpec, input_spec
from neurodbg.vision.small_ascent import SmallAscent

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


SMALL_IMAGE = 1 << 20    # matrix entries below which the Fourier synthesis is one matrix product


class FourierImage(torch.nn.Module):
    """An image parameterised by its scaled spectrum (and, with three channels, a decorrelated
    colour basis); `forward()` gives [1, C, H, W] pixels in [0, 1].

    The synthesis (scale, inverse FFT, colour basis) is linear in the spectrum: for a small image it
    runs as one matrix product, the matrix made once by putting each spectrum coordinate through the
    FFT path (at 8x8 the FFT pair of a step costs ~60 us, the product ~5: the same map, rounded
    differently)."""

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
        coordinates = self.spectrum.numel()
        self.synthesis: torch.Tensor | None = None
        if coordinates * channels * size * size <= SMALL_IMAGE:
            with torch.no_grad():        # column k: the image of the k-th spectrum coordinate
                basis = torch.eye(coordinates).view(coordinates, *shape[1:])
                self.synthesis = self._linear(basis).reshape(coordinates, -1).T.contiguous()

    def _linear(self, spectrum: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W//2+1, 2] -> [N, C, H, W] before the sigmoid."""
        image = torch.fft.irfft2(torch.view_as_complex(spectrum) * self.scale, s=(self.size, self.size), norm="ortho")
        if self.channels == 3:
            basis = COLOR_CORRELATION / COLOR_CORRELATION.norm(dim=0).max()
            image = torch.einsum("nchw,dc->ndhw", image, basis.to(image))
        return image

    def forward(self) -> torch.Tensor:
        if self.synthesis is not None:
            flat = torch.mv(self.synthesis, self.spectrum.view(-1))
            return torch.sigmoid(flat).view(1, self.channels, self.size, self.size)
        return torch.sigmoid(self._linear(self.spectrum))


GRID_CHUNK = 64          # steps whose sampling grids are drawn at once (224 px: ~26 MB)


def transform_grids(steps: int, channels: int, size: int, generator: torch.Generator, *, jitter: int,
                    scales: tuple[float, float], degrees: float) -> torch.Tensor:
    """Each step's random view of the image as one sampling grid [steps, size, size, 2]: a shift of
    up to `jitter` pixels, a scale in `scales` and a rotation within ±`degrees` about the centre
    (what `grid_sample` reads, reflecting at the border, so the view has no blank corners)."""
    r = torch.rand((steps, 4), generator=generator, dtype=torch.float64)
    shift = torch.floor(r[:, :2] * (2 * jitter + 1)) - jitter          # whole pixels, as a crop would
    scale = scales[0] + (scales[1] - scales[0]) * r[:, 2]
    angle = torch.deg2rad(degrees * (2 * r[:, 3] - 1))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, 2 * shift[:, 0] / size], 1),
                         torch.stack([sin, cos, 2 * shift[:, 1] / size], 1)], 1).float()
    return torch.nn.functional.affine_grid(theta, [steps, channels, size, size], align_corners=False)


class Variation:
    """`weight` × the total variation of [1, C, H, W] pixels over their 2x2 neighbourhoods: the mean
    absolute difference across and down (the total variation less the last row's across and the last
    column's down differences). A small image's differences are one matrix product and its L1 norm
    one reduction (two autograd nodes); a large one's one convolution of the channels as a batch."""

    def __init__(self, channels: int, size: int, weight: float) -> None:
        across = torch.tensor([[-1.0, 1.0], [0.0, 0.0]])
        down = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
        count = channels * 2 * (size - 1) ** 2
        self.kernel = (2 * weight) * torch.stack([across, down])[:, None]
        self.matrix: torch.Tensor | None = None
        if count * channels * size * size <= SMALL_IMAGE:
            with torch.no_grad():           # row r: the r-th difference of the convolution, scaled
                basis = torch.eye(channels * size * size).view(-1, 1, size, size)
                differences = torch.nn.functional.conv2d(basis, self.kernel / count)    # [C*H*W, 2, H-1, W-1]
                per_channel = differences.reshape(channels, size * size, -1)             # [C, H*W, 2*(H-1)*(W-1)]
                self.matrix = torch.block_diag(*[m.T for m in per_channel]).contiguous()

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.matrix is not None:
            return torch.linalg.vector_norm(torch.mv(self.matrix, pixels.reshape(-1)), 1)
        c = pixels.shape[1]
        return torch.nn.functional.conv2d(pixels.view(c, 1, *pixels.shape[2:]), self.kernel).abs().mean()


class _Objective:
    """pixels [N, C, H, W] in [0, 1] -> the objective per image [N], through one trace kept open for
    the whole ascent (its hooks installed once, not per step)."""

    def __init__(self, model: Model, spec: InputSpec, site: str, target: Target, index: int,
                 position: list[int] | None) -> None:
        self.model, self.spec, self.target, self.index, self.position = model, spec, target, index, position
        self.resolved = model.site(site)
        self.seen: list[torch.Tensor] = []      # a sink gets the site's tensor with its graph (captures detach)
        self.trace = model.trace(capture=[self.resolved.name], sink=lambda name, value: self.seen.append(value),
                                 stop_early=True)
        # the model's normalisation as one multiply-add, its constants made once
        self.affine = None if spec.mean is None or spec.std is None else \
            (-torch.tensor(spec.mean).view(1, -1, 1, 1) / torch.tensor(spec.std).view(1, -1, 1, 1),
             1 / torch.tensor(spec.std).view(1, -1, 1, 1))

    def __enter__(self) -> _Objective:
        self.trace.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.trace.__exit__(None, None, None)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.seen.clear()
        model_input = pixels if self.affine is None else torch.addcmul(self.affine[0], pixels, self.affine[1])
        self.trace.forward(model_input, grad=torch.is_grad_enabled())
        value, index, resolved = self.seen[0], self.index, self.resolved
        if self.target == "class" or value.dim() == 2:             # [N, units]
            if index >= value.shape[-1]:
                raise NeuronIndexError(f"{'class' if self.target == 'class' else 'unit'} {index} out of range "
                                       f"for {resolved.name} (0-{value.shape[-1] - 1})")
            return value[:, index]
        maps = value if resolved.channel_axis == 1 and value.dim() == 4 else value.transpose(1, 2)  # [N, C, ...]
        if index >= maps.shape[1]:
            raise NeuronIndexError(f"channel {index} out of range for {resolved.name} (0-{maps.shape[1] - 1})")
        channel = maps[:, index]
        if self.target == "channel":
            return channel.flatten(1).mean(1)
        flat_position = _flat_position(self.position, channel.shape[1:], resolved.name)
        return channel.flatten(1)[:, flat_position]


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
    spec = input_spec(model, size=size)
    generator = torch.Generator().manual_seed(seed)
    image = FourierImage(spec.channels, spec.size, decay=decay, generator=generator)
    shift = max(1, round(spec.size / 16)) if jitter is None else jitter
    optimiser = AdamStep(image.spectrum, lr)
    was_training = model.module.training
    model.module.eval()
    frozen = [p for p in model.module.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)                  # gradients for the image only
    curve: list[float] = []
    try:
        with _Objective(model, spec, "logits" if target == "class" else site, target, index, position) as objective:
            with torch.no_grad():
                start = float(objective(image())[0])
                grey = float(objective(torch.full((1, spec.channels, spec.size, spec.size), 0.5))[0])
            grids = torch.empty(0)
            variation = Variation(spec.channels, spec.size, tv_weight)
            small = SmallAscent.of(image.synthesis, variation.matrix, image.spectrum, spec.channels, spec.size,
                                   optimiser, GRID_CHUNK)
            for step in range(steps):
                if step % GRID_CHUNK == 0:
                    grids = transform_grids(min(GRID_CHUNK, steps - step), spec.channels, spec.size, generator,
                                            jitter=shift, scales=scales, degrees=degrees)
                    if small is not None:
                        small.views(grids)
                if small is not None:
                    seen = small.model_input(step % GRID_CHUNK)
                    value = objective(seen)[0]
                    (grad_input,) = torch.autograd.grad(value, seen)
                    small.step(step % GRID_CHUNK, grad_input)
                else:
                    pixels = image()
                    seen = torch.nn.functional.grid_sample(pixels, grids[step % GRID_CHUNK][None], mode="bilinear",
                                                           padding_mode="reflection", align_corners=False)
                    value = objective(seen)[0]
                    loss = variation(pixels) - value
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
