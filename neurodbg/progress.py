"""Progress bars for long jobs (rich), with one switch to silence them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@contextmanager
def byte_progress(label: str, total: int, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n_bytes)` callback drawing a byte-count bar on stderr."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:  # no bars in logs, pipes and CI
        yield lambda n: None
        return
    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
