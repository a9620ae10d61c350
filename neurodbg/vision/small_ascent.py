"""A small image's activation-maximisation step with autograd through the model only.

Everything between the parameters (the image's scaled spectrum) and the model's input is
linear except the sigmoid: the synthesis (`FourierImage.synthesis`), each step's random
view (bilinear `grid_sample` with reflection is, for a fixed grid, a matrix on the
pixels; made a chunk of steps at a time by sampling the pixel basis) and the total
variation's differences (`Variation.matrix`). So a step is: the view of the current
pixels as plain tensors, the objective's gradient on it from one backward pass through
the model, and the loss's gradient on the spectrum by hand (three matrix products and
the sigmoid's derivative), then Adam. At 8x8 the autograd graph of those pieces cost
~0.1 ms a step, half the digits CNN's forward pass.

Where this machine has the C++ kernel built (small_ascent.cpp, by `neurodbg
build-kernels`; a maximisation never builds it) the view and the gradient with Adam
are one call each; elsewhere, or with NEURODBG_NO_ASCENT_KERNEL=1, tensor operations
do the same."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from neurodbg.cpp_kernel import CppKernel
from neurodbg.vision.adam_step import AdamStep

SOURCE = Path(__file__).with_name("small_ascent.cpp")
KERNEL = CppKernel(SOURCE, "neurodbg_small_ascent", None, "activation maximisation's C++ kernel")
DISABLE_ENV = "NEURODBG_NO_ASCENT_KERNEL"
SAMPLING_ENTRIES = 1 << 22    # entries of a chunk's view matrices up to which an image is small


def built() -> Any | None:
    """The kernel's module where this machine has it built and it is not turned off; else None."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None
    try:
        return KERNEL.built()
    except Exception:        # a build this process cannot load: the tensor operations run
        return None


class SmallAscent:
    """`views(grids)` takes a chunk's sampling grids; `model_input(step)` is step `step` of the chunk's
    view of the current pixels, a leaf that requires grad; `step(step, grad_input)` moves the spectrum
    by the gradient of variation − objective, given the objective's gradient on that input."""

    def __init__(self, synthesis: torch.Tensor, differences: torch.Tensor, spectrum: torch.Tensor, channels: int,
                 size: int, optimiser: AdamStep, *, kernel: Any | None = None) -> None:
        self.synthesis, self.differences, self.spectrum = synthesis, differences, spectrum
        self.channels, self.size, self.optimiser = channels, size, optimiser
        self.views_t = torch.empty(0)       # [steps, H*W (from), H*W (to)]
        self.p = torch.empty(0)             # the current pixels [C*H*W], kept for the gradient
        self.seen = torch.zeros((1, channels, size, size), requires_grad=True)   # the kernel's model input
        lr, (beta1, beta2), eps = optimiser.lr, optimiser.betas, optimiser.eps
        self.kernel = None if kernel is None else kernel.SmallAscent(
            synthesis, differences, spectrum.detach().view(-1), optimiser.m.view(-1), optimiser.v.view(-1),
            self.seen.detach().view(-1), channels, lr, beta1, beta2, eps)

    @classmethod
    def of(cls, synthesis: torch.Tensor | None, differences: torch.Tensor | None, spectrum: torch.Tensor,
           channels: int, size: int, optimiser: AdamStep, chunk: int) -> SmallAscent | None:
        """The small-image step where the image is small enough (its synthesis and differences are
        matrices, and a chunk's view matrices fit `SAMPLING_ENTRIES`); None otherwise."""
        pixels = size * size
        if synthesis is None or differences is None or chunk * pixels * pixels > SAMPLING_ENTRIES \
                or spectrum.device.type != "cpu":
            return None
        return cls(synthesis, differences, spectrum, channels, size, optimiser, kernel=built())

    def views(self, grids: torch.Tensor) -> None:
        """grids [steps, H, W, 2]: row k of a step's matrix is the view of the k-th basis pixel."""
        n, pixels = grids.shape[0], self.size * self.size
        # the basis pixels as the channels of one image: each grid's coordinates are worked out once
        basis = torch.eye(pixels).view(1, pixels, self.size, self.size).expand(n, -1, -1, -1)
        sampled = torch.nn.functional.grid_sample(basis, grids, mode="bilinear", padding_mode="reflection",
                                                  align_corners=False)
        self.views_t = sampled.view(n, pixels, pixels)

    def model_input(self, step: int) -> torch.Tensor:
        """[1, C, H, W]: this step's view of the current pixels."""
        if self.kernel is not None:
            self.kernel.input(self.views_t, step)
            return self.seen
        with torch.no_grad():
            self.p = torch.sigmoid(torch.mv(self.synthesis, self.spectrum.view(-1)))
            seen = torch.mm(self.p.view(self.channels, -1), self.views_t[step])
        return seen.view(1, self.channels, self.size, self.size).requires_grad_(True)

    def step(self, step: int, grad_input: torch.Tensor) -> None:
        if self.kernel is not None:
            self.kernel.update(self.views_t, step, grad_input)
            return
        self.spectrum.grad = self.gradient(step, grad_input)
        self.optimiser.step()

    def gradient(self, step: int, grad_input: torch.Tensor) -> torch.Tensor:
        """The spectrum's gradient of |differences @ pixels|_1 − objective, `grad_input` the objective's
        gradient on step `step`'s view [1, C, H, W] (tensor operations; the kernel's `update` the same)."""
        p = self.p
        grad = torch.mv(self.differences.T, torch.sign(torch.mv(self.differences, p)))
        grad.view(self.channels, -1).addmm_(grad_input.view(self.channels, -1), self.views_t[step].T, alpha=-1)
        grad.mul_(torch.addcmul(p, p, p, value=-1))                  # the sigmoid's derivative
        return torch.mv(self.synthesis.T, grad).view_as(self.spectrum)
