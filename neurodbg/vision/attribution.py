"""Which pixels a prediction rests on: saliency, integrated gradients and Grad-CAM,
computed by Captum (not by hand) on the model's preprocessed input.

- saliency: |∂ logit / ∂ pixel|, the largest over colour channels (Simonyan et al. 2014);
- integrated gradients: the path integral from a baseline (black, in the model's
  own normalisation) to the image, summed over colour channels; its completeness
  gap — the attributions' sum against logit(image) − logit(baseline) — is
  reported with it (Sundararajan et al. 2017);
- Grad-CAM at a convolution site (default: the last block): the channels'
  feature maps weighted by their mean gradient, rectified and upsampled to the
  input (Selvaraju et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from neurodbg.errors import ImageError, NeuronIndexError
from neurodbg.model import Model
from neurodbg.vision.images import ImageLike, batch_of, to_pil

Method = Literal["saliency", "integrated_gradients", "gradcam"]
METHODS: tuple[Method, ...] = ("saliency", "integrated_gradients", "gradcam")


@dataclass
class Attribution:
    model: str
    method: Method
    target: int                      # the class explained
    label: str
    prob: float
    predicted: int
    map: torch.Tensor                # [H, W] over the model's input
    site: str | None = None          # Grad-CAM's layer
    completeness_gap: float | None = None     # integrated gradients: sum - (f(x) - f(baseline))
    image: Any = None                # the PIL image, for drawing

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "method": self.method, "target": self.target, "label": self.label,
                "prob": self.prob, "predicted": self.predicted, "site": self.site,
                "completeness_gap": self.completeness_gap, "map_shape": list(self.map.shape),
                "map_max": float(self.map.max()), "map_sum": float(self.map.sum())}

    def figure(self, path: str | Path) -> Path:
        import numpy as np

        from neurodbg.viz.figures import plt, save_figure

        picture = np.asarray(self.image.convert("RGB")) if self.image is not None else None
        fig, axes = plt.subplots(1, 2, figsize=(8, 4), dpi=100, layout="constrained")
        if picture is not None:
            axes[0].imshow(picture)
        axes[0].set_title(f"input · predicted {self.predicted}", fontsize=9)
        shown = self.map.numpy()
        if picture is not None:
            axes[1].imshow(picture)
            axes[1].imshow(shown, cmap="inferno", alpha=0.6, interpolation="bilinear",
                           extent=(-0.5, picture.shape[1] - 0.5, picture.shape[0] - 0.5, -0.5))
        else:
            axes[1].imshow(shown, cmap="inferno")
        axes[1].set_title(f"{self.method} for {self.label!s} (p={self.prob:.3f})", fontsize=9)
        for ax in axes:
            ax.axis("off")
        return save_figure(fig, path)


def _logits_of(output: Any) -> torch.Tensor:
    logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise ImageError("the model's output has no logits to attribute")
    return logits


def attribute(model: Model, image: ImageLike, *, method: Method = "integrated_gradients", target: int | None = None,
              site: str | None = None, steps: int = 64) -> Attribution:
    """Attribute class `target` (default: the predicted one) of one image to its pixels."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    if method not in METHODS:
        raise ImageError(f"unknown attribution method {method!r}; choose {', '.join(METHODS)}")
    picture = to_pil(image)
    x = batch_of(model, [picture]).float().requires_grad_(True)
    module = model.module
    was_training = module.training
    module.eval()

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return _logits_of(module(inputs))

    try:
        with torch.no_grad():
            logits = forward(x)[0]
        classes = logits.shape[-1]
        predicted = int(logits.argmax())
        chosen = predicted if target is None else target
        if not 0 <= chosen < classes:
            raise NeuronIndexError(f"class {chosen} out of range (0-{classes - 1})")
        gap: float | None = None
        layer_site: str | None = None
        if method == "saliency":
            grads = Saliency(forward).attribute(x, target=chosen, abs=True)
            heat = grads[0].amax(0)
        elif method == "integrated_gradients":
            baseline = batch_of(model, [to_pil(torch.zeros(3, *picture.size[::-1]))]).float() \
                if model.preprocess is not None else torch.zeros_like(x)
            attrs, delta = IntegratedGradients(forward).attribute(x, baselines=baseline, target=chosen, n_steps=steps,
                                                                  return_convergence_delta=True)
            gap = float(delta[0])
            heat = attrs[0].sum(0)
        else:
            layer_site = site or _last_block(model)
            found = model.site(layer_site)
            layer = dict(module.named_modules())[found.module_path]
            cam = LayerGradCam(forward, layer).attribute(x, target=chosen, relu_attributions=True)
            if cam.dim() != 4:
                raise ImageError(f"Grad-CAM needs a convolution site [N, C, H, W]; {layer_site} gives "
                                 f"{list(cam.shape)}")
            heat = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[0, 0]
    finally:
        module.train(was_training)
    probs = torch.softmax(logits.double(), -1)
    label = model.labels[chosen] if model.labels and chosen < len(model.labels) else str(chosen)
    return Attribution(model.name, method, chosen, label, float(probs[chosen]), predicted,
                       heat.detach().float().cpu(), layer_site, gap, picture)


def _last_block(model: Model) -> str:
    blocks = [name for name in model.sites if name.startswith("stages.") and name.endswith(".out")]
    if not blocks:
        raise ImageError(f"{model.name} has no canonical convolution blocks; name a site for Grad-CAM")
    return blocks[-1]
