"""Where neurodbg keeps what it provisions (models now, corpora and atlases later)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root of neurodbg's cache: $NEURODBG_HOME, else ~/.cache/neurodbg."""
    env = os.environ.get("NEURODBG_HOME")
    root = Path(env) if env else Path.home() / ".cache" / "neurodbg"
    return root.expanduser()


def models_dir() -> Path:
    return home() / "models"
