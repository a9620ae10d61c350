"""Resolve user-facing site names and patterns to concrete `Site`s."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from neurodbg.errors import UnknownSiteError, UnsupportedArchitectureError
from neurodbg.sites.adapter import BoundAdapter, supported_families_text
from neurodbg.sites.patterns import is_pattern, matches
from neurodbg.sites.site import Site, parse_raw
from neurodbg.sites.structural import StructuralAdapter


class SiteResolver:
    def __init__(self, model: nn.Module, adapter: BoundAdapter | StructuralAdapter | None) -> None:
        self.model = model
        self.adapter = adapter
        self._modules = {name for name, _ in model.named_modules()}

    @property
    def canonical(self) -> dict[str, Site]:
        return self.adapter.sites if self.adapter else {}

    def resolve(self, spec: str | Iterable[str]) -> list[Site]:
        """All sites named by `spec` (a name, a pattern, or several), in model order, once each."""
        specs = [spec] if isinstance(spec, str) else list(spec)
        found: dict[str, Site] = {}
        for one in specs:
            for site in self._resolve_one(one.strip()):
                found.setdefault(site.name, site)
        return list(found.values())

    def resolve_single(self, name: str) -> Site:
        sites = self.resolve(name)
        if len(sites) != 1:
            raise UnknownSiteError(f"{name!r} names {len(sites)} sites; expected exactly one")
        return sites[0]

    def _resolve_one(self, spec: str) -> list[Site]:
        if not spec:
            raise UnknownSiteError("empty site name")
        if ":" in spec:
            return self._resolve_raw(spec)
        if not self.adapter:
            config = getattr(self.model, "config", None)
            arch = getattr(config, "model_type", None) or type(self.model).__name__
            raise UnsupportedArchitectureError(
                f"no canonical site names for architecture {arch!r}; supported families: "
                f"{supported_families_text()}. Raw paths like 'path.to.module:output' work for any model")
        if not is_pattern(spec):
            if spec in self.canonical:
                return [self.canonical[spec]]
            raise UnknownSiteError(f"unknown site {spec!r}; {self._hint()}")
        hits = [site for name, site in self.canonical.items() if matches(spec, name)]
        if not hits:
            raise UnknownSiteError(f"pattern {spec!r} matches no site; {self._hint()}")
        return hits

    def _resolve_raw(self, spec: str) -> list[Site]:
        path, port, index = parse_raw(spec)
        if is_pattern(path):
            paths = [m for m in self.model.named_modules() if m[0] and matches(path, m[0])]
            if not paths:
                raise UnknownSiteError(f"module pattern {path!r} matches no module")
            suffix = spec[len(path):]
            return [Site(f"{name}{suffix}", name, port, index) for name, _ in paths]
        if path not in self._modules:
            raise UnknownSiteError(f"no module {path!r} in {type(self.model).__name__}; "
                                   f"see `neurodbg inspect` for the module tree")
        return [Site(spec, path, port, index)]

    def _hint(self) -> str:
        if isinstance(self.adapter, StructuralAdapter):
            return self.adapter.hint()
        n = self.adapter.n_layers if self.adapter else 0
        kinds = sorted({name.split(".", 2)[2] for name in self.canonical if name.startswith("layers.")})
        return (f"this model has layers 0-{n - 1} with sites {', '.join(kinds)}, "
                f"plus embed, final_norm, logits where present")
