"""Fetch a package tarball from the npm registry and read files out of it, refusing
the tarball unless its sha512 is the pinned `integrity` (the string npm itself
records in lockfiles). Only Python's standard library is used: a machine needs no
Node or npm for this, only a route to the registry.

The registry is https://registry.npmjs.org unless NEURODBG_NPM_REGISTRY names a
mirror (same layout: NAME/-/BASENAME-VERSION.tgz)."""

from __future__ import annotations

import base64
import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from neurodbg.errors import NeurodbgError
from neurodbg.progress import byte_progress

DEFAULT_REGISTRY = "https://registry.npmjs.org"
CHUNK = 1 << 20
TIMEOUT_S = 60


def registry() -> str:
    return (os.environ.get("NEURODBG_NPM_REGISTRY") or DEFAULT_REGISTRY).rstrip("/")


def tarball_url(package: str, version: str) -> str:
    """`@scope/name` -> REGISTRY/@scope/name/-/name-VERSION.tgz, as npm lays tarballs out."""
    return f"{registry()}/{package}/-/{package.rsplit('/', 1)[-1]}-{version}.tgz"


def integrity_of(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def fetch_npm_tarball(package: str, version: str, integrity: str, work: Path, *, progress: bool,
                      error: type[NeurodbgError] = NeurodbgError) -> Path:
    """Path of the downloaded tarball, checked against `integrity`; failures raise `error` with one line."""
    url = tarball_url(package, version)
    out = work / f"{package.rsplit('/', 1)[-1]}-{version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(out, "wb") as dst:
            total = int(response.headers.get("Content-Length") or 0)
            with byte_progress(f"downloading {package}@{version}", total, enabled=progress) as advance:
                while block := response.read(CHUNK):
                    dst.write(block)
                    advance(len(block))
    except urllib.error.HTTPError as exc:
        raise error(f"could not download {package}@{version} from {registry()}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise error(f"could not download {package}@{version} from {registry()}: {reason}") from None
    got = integrity_of(out)
    if got != integrity:
        raise error(f"integrity mismatch for {package}@{version}: expected {integrity}, got {got}; refusing to use it")
    return out


def tarball_members(tarball: Path, prefix: str, suffix: str = "", *,
                    error: type[NeurodbgError] = NeurodbgError) -> list[tuple[str, bytes]]:
    """(path, bytes) of the regular files under `prefix` ending in `suffix`, sorted by path.
    Read in memory: nothing is extracted, so a hostile path cannot escape the work directory."""
    found: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.startswith(prefix) and member.name.endswith(suffix):
                    handle = tar.extractfile(member)
                    assert handle is not None  # a regular file always has one
                    found.append((member.name, handle.read()))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise error(f"{tarball.name} is not a readable npm tarball: {exc}") from None
    if not found:
        raise error(f"{tarball.name} holds no file under {prefix!r} ending in {suffix!r}")
    return sorted(found)
