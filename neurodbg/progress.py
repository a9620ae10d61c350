"""Progress bars for long jobs (rich) on stderr, each with one switch to silence it; all of
neurodbg's bars come from here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@contextmanager
def _bar(label: str, total: int, columns: tuple[Any, ...], enabled: bool) -> Iterator[Callable[[int], None]]:
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


class RateProgress:
    """A bar for long jobs counted in items (tokens, neurons, descriptions): n of total, items per
    second, elapsed time and ETA; `advance(n)` after each step. Silent when disabled or when stderr
    is not a terminal."""

    def __init__(self, enabled: bool, label: str, total: int | None, *, unit: str = "neurons", done: int = 0) -> None:
        console = Console(stderr=True)
        self.enabled = enabled and console.is_terminal   # no bars in logs, pipes and CI
        self._bar: Progress | None = None
        if self.enabled:
            columns = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                       TextColumn(f"{{task.fields[rate]}} {unit}/s"), TimeElapsedColumn(), TextColumn("eta"),
                       TimeRemainingColumn()]
            self._bar = Progress(*columns, console=console, refresh_per_second=2)
            self._task = self._bar.add_task(label, total=total, completed=done, rate="-")
            self._done = 0
            import time

            self._clock = time.perf_counter
            self._start = self._clock()

    def __enter__(self) -> RateProgress:
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar:
            self._bar.stop()

    def advance(self, n: int) -> None:
        if self._bar:
            self._done += n
            rate = self._done / max(self._clock() - self._start, 1e-9)
            self._bar.update(self._task, advance=n, rate=f"{rate:,.0f}")
