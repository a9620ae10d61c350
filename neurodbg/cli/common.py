"""Options and output helpers shared by every command."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from neurodbg.errors import InterventionError, NeurodbgError

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Catalogue name, model dir, .gguf file or hub id.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]

TemperatureOpt = Annotated[float, typer.Option(help="Sampling temperature (> 0).")]
TopKOpt = Annotated[int, typer.Option(min=0, help="Top-k sampling (0: off).")]
TopPOpt = Annotated[float, typer.Option(help="Nucleus sampling, in (0, 1].")]
SeedOpt = Annotated[int, typer.Option(min=0, help="Seed: the same seed gives the same samples.")]

console = Console()
err_console = Console(stderr=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def emit_result(result: Any, png: Any, json_out: bool) -> dict[str, Any] | None:
    """A library result's dict, with its figure written where `png` says: printed as JSON (and None
    returned) with `json_out`, else returned for the command to show."""
    out: dict[str, Any] = result.to_dict()
    if png:
        out["png"] = str(result.figure(png))
    if json_out:
        emit_json(out)
        return None
    return out


def finite(low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """A float option's parser that refuses nan, inf and -inf (Python's float() reads them) and
    values outside [low, high]: `typer.Option(parser=finite(0.1))`."""
    def parse(text: str | float) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise typer.BadParameter(f"{text!r} is not a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"{'-inf' if low is None else f'{low:g}'} to {'inf' if high is None else f'{high:g}'}"
            raise typer.BadParameter(f"{value:g} is outside {span}")
        return value

    return parse


def int_list(text: str | None, what: str) -> list[int] | None:
    """'3', '0-5', '1,4,7-9' -> sorted distinct ints; None stays None (meaning all)."""
    if text is None:
        return None
    out: set[int] = set()
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if first < 0 or last < first:
                raise ValueError
            out.update(range(first, last + 1))
    except ValueError:
        raise NeurodbgError(f"malformed {what} {text!r}; expected like 3, 0-5 or 1,4,7-9") from None
    return sorted(out)


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


def read_interventions(path: Path) -> list[Any]:
    """An intervention JSON file's interventions (one clear error for an unreadable or malformed file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InterventionError(f"cannot read intervention file {path}: {exc}") from None
    from neurodbg.trace.interventions import loads

    return loads(text)
