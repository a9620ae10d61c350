"""Canonical site names, architecture adapters, raw module paths and patterns."""

from neurodbg.sites.adapter import Adapter, BoundAdapter, adapter_for, families, register
from neurodbg.sites.resolve import SiteResolver
from neurodbg.sites.site import Site

__all__ = ["Adapter", "BoundAdapter", "Site", "SiteResolver", "adapter_for", "families", "register"]
