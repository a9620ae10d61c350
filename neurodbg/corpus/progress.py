"""A count bar (items done of a total) for corpus builds, in the style of
neurodbg.progress: rich on stderr, silent when stderr is not a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def count_progress(label: str, total: int, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n_items)` callback drawing an n-of-total bar on stderr."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:  # no bars in logs, pipes and CI
        yield lambda n: None
        return
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
