"""Progress bars for long jobs (rich), with one switch to silence them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@contextmanager
def _bar(label: str, total: int, columns: tuple[Any, ...], enabled: bool) -> Iterator[Callable[[int], None]]:
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:  # no bars in logs, pipes and CI
        yield lambda n: None
        return
    with Progress("[progress.description]{task.description}", *columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def byte_progress(label: str, total: int, *, enabled: bool = True) -> Any:
    """Context manager yielding an `advance(n_bytes)` callback for a byte-count bar on stderr."""
    return _bar(label, total, (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()),
                enabled)


def count_progress(label: str, total: int, *, enabled: bool = True) -> Any:
    """Context manager yielding an `advance(n_items)` callback for an n-of-total bar on stderr."""
    return _bar(label, total, (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()),
                enabled)
