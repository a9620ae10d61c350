"""The catalogue of embedded models (data in catalogue.yaml, not code)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    description: str
    pypi_package: str
    pypi_version: str
    file_in_wheel: str
    sha256: str
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.pypi_package}=={self.pypi_version}"


@cache
def _raw() -> dict[str, object]:
    text = resources.files("neurodbg.models").joinpath("catalogue.yaml").read_text()
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def default_name() -> str:
    return str(_raw()["default"])


def entries() -> dict[str, CatalogueEntry]:
    models = _raw()["models"]
    assert isinstance(models, dict)
    return {name: CatalogueEntry(name=name, **spec) for name, spec in models.items()}


def lookup(name: str) -> CatalogueEntry | None:
    """The entry for `name`, with "default" meaning the default model."""
    if name == "default":
        name = default_name()
    return entries().get(name)
