"""Adapters found from a module's structure rather than its config's `model_type`:
vision models (torchvision's have no config at all). A matcher looks at a module
and, when it recognises the layout, returns the canonical sites; it has the same
face as a bound config adapter (`family`, `sites`, `n_layers`, `writer_path`)."""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from neurodbg.sites.site import Site


class StructuralAdapter:
    def __init__(self, family: str, sites: dict[str, Site], n_layers: int = 0) -> None:
        self.family = family
        self._sites = sites
        self.n_layers = n_layers    # transformer layers (CNN sites are stages and blocks: 0)

    @property
    def sites(self) -> dict[str, Site]:
        return self._sites

    def writer_path(self, layer: int) -> str | None:
        return None

    def hint(self) -> str:
        """The site names in short: numbered runs collapse into {s} and {b} placeholders."""
        shapes: dict[str, None] = {}
        for name in self._sites:
            shapes.setdefault(re.sub(r"layers\.\d+", "layers.{i}",
                                     re.sub(r"stages\.\d+\.blocks\.\d+", "stages.{s}.blocks.{b}", name)))
        return f"this {self.family} model has sites {', '.join(shapes)}"


Matcher = Callable[[nn.Module], StructuralAdapter | None]
_MATCHERS: list[Matcher] = []


def register_matcher(matcher: Matcher) -> Matcher:
    _MATCHERS.append(matcher)
    return matcher


def structural_adapter_for(module: nn.Module) -> StructuralAdapter | None:
    import neurodbg.sites.architectures  # noqa: F401  (registers the built-in matchers)

    for matcher in _MATCHERS:
        found = matcher(module)
        if found is not None:
            return found
    return None


def site_map(entries: list[tuple[str, str]], *, channels_first: bool = True) -> dict[str, Site]:
    """Canonical sites reading module outputs: (canonical name, module path) in model order. With
    `channels_first`, a 4-D output's axis 1 holds the neurons (convolutions)."""
    return {name: Site(name, path, "output", channel_axis=1 if channels_first else None) for name, path in entries}
