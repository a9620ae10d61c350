"""Options and output helpers shared by every command."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Catalogue name, model dir, .gguf file or hub id.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]

console = Console()
err_console = Console(stderr=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def quiet_libraries() -> None:
    """Keep transformers' progress bars and warnings off the terminal."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load(model: str, *, quiet: bool) -> Any:
    """Load a model, keeping library chatter (progress bars) off stdout."""
    from neurodbg.models.loader import load_model

    quiet_libraries()
    return load_model(model, progress=not quiet)
