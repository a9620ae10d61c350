"""Atomic checkpoints: written to a temporary file, fsynced, then renamed over
the previous one, so a kill at any instant leaves the last good checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from neurodbg.errors import AtlasError

NAME = "checkpoint.pt"


def path_in(directory: Path) -> Path:
    return directory / NAME


def save(directory: Path, state: dict[str, Any]) -> None:
    save_file(path_in(directory), state)


def save_file(final: Path, state: dict[str, Any]) -> None:
    directory = final.parent
    tmp = final.with_name(f".{final.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "the write failed (disk full?)"
        raise AtlasError(f"could not write a checkpoint in {directory}: {reason}; "
                         f"the atlas stays at its last good checkpoint") from None


def load(directory: Path) -> dict[str, Any] | None:
    return load_file(path_in(directory))


def load_file(final: Path) -> dict[str, Any] | None:
    if not final.is_file():
        return None
    try:
        state: dict[str, Any] = torch.load(final, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise AtlasError(f"checkpoint {final} is unreadable ({str(exc).splitlines()[0][:120]}); "
                         f"delete it to restart the scan from scratch") from None
    return state


def remove(directory: Path) -> None:
    path_in(directory).unlink(missing_ok=True)
