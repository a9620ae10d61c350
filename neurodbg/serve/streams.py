"""Long jobs as newline-delimited JSON streams. The job runs in its own thread (it
holds the model while it works); events cross to the event loop through a queue.
When the client goes away the stream's `finally` raises the cancel flag, the job
stops at its next step and releases the model for everyone else."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from neurodbg.errors import NeurodbgError

log = logging.getLogger("neurodbg.serve")

Emit = Callable[[dict[str, Any]], None]
Job = Callable[[Emit, Callable[[], bool]], None]


class Cancelled(Exception):
    """The client disconnected; the job abandons its work."""


class Workers:
    """The server's own threads (stream jobs, warm-up). Shutdown cancels and joins them: a thread
    still inside torch when the interpreter exits aborts the process."""

    def __init__(self) -> None:
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    def start(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            try:
                target()
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, daemon=True, name=name)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def join(self, timeout: float = 120.0) -> None:
        self.stopping.set()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)


async def ndjson(job: Job, workers: Workers) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    cancel = threading.Event()

    def emit(event: dict[str, Any] | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        except RuntimeError:     # the loop has closed (server shutting down)
            cancel.set()

    def run() -> None:
        try:
            job(emit, lambda: cancel.is_set() or workers.stopping.is_set())
        except Cancelled:
            pass
        except NeurodbgError as exc:
            emit({"type": "error", "detail": str(exc)})
        except Exception as exc:   # a bug: report it to this client, keep serving the others
            log.exception("stream job failed")
            emit({"type": "error", "detail": f"internal error: {type(exc).__name__}"})
        finally:
            emit(None)

    workers.start(run, "neurodbg-stream")
    try:
        while (event := await queue.get()) is not None:
            yield json.dumps(event, ensure_ascii=False) + "\n"
    finally:
        cancel.set()
