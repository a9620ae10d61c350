"""A progress bar for scans: count, rate and ETA, on stderr (rich)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ScanProgress:
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

    def __enter__(self) -> ScanProgress:
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
