"""Shared by the scan benchmarks: the plain forward truncated where a scan of all
layers stops, and paired rounds (plain, then scan, on the same batch)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

import neurodbg


class _Stop(Exception):
    pass


def synchronizer(model: neurodbg.Model) -> Callable[[], None]:
    """Waits for queued GPU work, so wall-clock timings cover it."""
    return torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)


def truncated_forward(model: neurodbg.Model) -> Callable[[list[Any]], None]:
    """The plain forward of a batch of sequences (`.ids`), stopped at the input of the last
    layer's down_proj: the last `mlp.act` a scan reads, so both compute the same."""
    last = model.module.model.layers[-1].mlp.down_proj

    def stop(*_: object) -> None:
        raise _Stop

    def run(batch: list[Any]) -> None:
        ids = torch.tensor([s.ids for s in batch], device=model.device)
        handle = last.register_forward_pre_hook(stop)
        try:
            with torch.no_grad():
                model.module(input_ids=ids, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()

    return run


def paired_rounds(batches: Iterator[list[Any]], plain: Callable[[list[Any]], None],
                  scan: Callable[[list[Any]], None], rounds: int, synchronize: Callable[[], None]
                  ) -> tuple[list[float], list[float]]:
    """Seconds of the plain forward and of the scan on each of `rounds` batches."""
    plain_times, scan_times = [], []
    for _ in range(rounds):
        batch = next(batches)
        synchronize()
        t0 = time.perf_counter()
        plain(batch)
        synchronize()
        t1 = time.perf_counter()
        scan(batch)
        synchronize()
        plain_times.append(t1 - t0)
        scan_times.append(time.perf_counter() - t1)
    return plain_times, scan_times
