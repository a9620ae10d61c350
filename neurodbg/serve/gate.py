"""Serialises access to what clients share: the model (one forward or generation at
a time — torch modules and hooks are not safe to run concurrently on one model)
and the atlas database with the search index. Always taken in the order model,
then atlas, so two requests can never wait on each other."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Gate:
    def __init__(self) -> None:
        self._model = threading.Lock()
        self._atlas = threading.Lock()
        self._count = threading.Lock()
        self.waiting = 0           # requests queued for the model (shown as progress in the UI)

    @contextmanager
    def model(self) -> Iterator[None]:
        with self._count:
            self.waiting += 1
        with self._model:
            with self._count:
                self.waiting -= 1
            yield

    @contextmanager
    def atlas(self) -> Iterator[None]:
        with self._atlas:
            yield

    @contextmanager
    def both(self) -> Iterator[None]:
        with self.model(), self.atlas():
            yield
