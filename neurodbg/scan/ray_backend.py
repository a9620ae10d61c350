"""Scale a scan out on Ray: the batches of the sequence stream are dealt out to
`workers` shards (batch number modulo the worker count), so every batch is
exactly the batch a single process would run (same sequences, same shapes,
same activation bits); each Ray task loads the model and corpus itself, scans
its shard and returns its statistics; the driver merges them. Merging is exact
for exemplars, quantiles, histograms and counts (a total order with the
sequence index as tie-break); means and standard deviations are float sums in
another order, equal to ~1e-12 relative.

The driver keeps each finished shard as an atomic file in the atlas directory,
so a killed run resumes with only the unfinished shards. Ray connects to
$RAY_ADDRESS when set (a real cluster), else starts a local one."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from neurodbg.atlas import records
from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import CorpusError, NeurodbgError
from neurodbg.model import Model
from neurodbg.progress import RateProgress
from neurodbg.scan import checkpoint
from neurodbg.scan.finalize import write_atlas
from neurodbg.scan.runner import ScanSummary, batches, claim_atlas, sequence_stream
from neurodbg.scan.scanner import Scanner
from neurodbg.scan.settings import ScanSettings


def scan_shard(model_spec: str, corpus_spec: str, text_field: str, settings: dict[str, Any], shard: int,
               workers: int, threads: int, device: str = "cpu") -> dict[str, Any]:
    """Runs inside a Ray task: scan one shard, return the scanner's state (on the CPU)."""
    from neurodbg.corpus import open_corpus
    from neurodbg.models.loader import load_model

    torch.set_num_threads(threads)
    model = load_model(model_spec, progress=False, device=device)
    source = open_corpus(corpus_spec, text_field=text_field)
    config = ScanSettings.from_dict(settings)
    scanner = Scanner(model, config)
    for number, batch in enumerate(batches(sequence_stream(source, model, config), config.batch_size)):
        if number % workers == shard:
            scanner.process(batch)
    return _to_cpu(scanner.state_dict())


def _to_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    return state


def _shard_path(directory: Path, shard: int, workers: int) -> Path:
    return directory / f"shard-{shard}-of-{workers}.pt"


def scan_on_ray(model_spec: str, model: Model, source: Any, atlas_dir: str | Path, settings: ScanSettings, *,
                workers: int, corpus_spec: str, text_field: str = "text", progress: bool = True,
                gpus_per_worker: float = 0.0) -> ScanSummary:
    try:
        import ray
    except ImportError:
        raise NeurodbgError("the ray backend needs Ray: pip install 'ray>=2.9'") from None
    directory = Path(atlas_dir).expanduser()
    claim = claim_atlas(model, source, directory, settings)
    store, merged = claim.store, claim.scanner
    try:
        if store.status == "complete":
            return _done(store, directory, 0.0)
        for stale in directory.glob("shard-*-of-*.pt"):
            if not stale.name.endswith(f"-of-{workers}.pt"):
                stale.unlink()
        started = time.perf_counter()
        states = _run_shards(ray, directory, claim.identity, claim.accepted, model_spec, corpus_spec, text_field,
                             settings, workers, progress, gpus_per_worker)
        for state in states:
            part = Scanner(model, settings)
            part.load_state_dict(state)
            merged.merge(part)
        if merged.sequences == 0:
            raise CorpusError(f"corpus {source.name} yielded no sequence of {settings.seq_len} tokens")
        elapsed = time.perf_counter() - started
        summary = {"sequences": merged.sequences, "tokens": merged.sequences * settings.seq_len,
                   "scan_seconds": round(elapsed, 2), "backend": f"ray x{workers}"}
        with RateProgress(progress, "writing atlas", sum(s.width for s in merged.stats.values())) as bar:
            write_atlas(store, merged, model, sequence_stream(source, model, settings), summary, bar.advance)
        for shard in range(workers):
            _shard_path(directory, shard, workers).unlink(missing_ok=True)
        return _done(store, directory, elapsed, merged.sequences * settings.seq_len)
    finally:
        store.close()


def _run_shards(ray: Any, directory: Path, identity: dict[str, str], accepted: list[dict[str, str]],
                model_spec: str, corpus_spec: str,
                text_field: str, settings: ScanSettings, workers: int, progress: bool,
                gpus: float) -> list[dict[str, Any]]:
    states: dict[int, dict[str, Any]] = {}
    for shard in range(workers):
        saved = checkpoint.load_file(_shard_path(directory, shard, workers))
        if saved is not None and saved.get("identity") in accepted:
            states[shard] = saved["scanner"]
    todo = [s for s in range(workers) if s not in states]
    if todo:
        started_here = not ray.is_initialized()
        if started_here:
            address = os.environ.get("RAY_ADDRESS")
            ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                     **({} if address else {"num_cpus": max(workers, os.cpu_count() or 1)}))
        try:
            threads = max(1, (os.cpu_count() or 1) // workers)
            task = ray.remote(num_cpus=1, num_gpus=gpus)(scan_shard)
            device = "cuda" if gpus > 0 else "cpu"
            pending = {task.remote(model_spec, corpus_spec, text_field, settings.to_dict(), s, workers, threads,
                                   device): s for s in todo}
            with RateProgress(progress, f"ray shards ({workers} workers)", workers, unit="shards",
                              done=workers - len(todo)) as bar:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    shard = pending.pop(ready[0])
                    try:
                        state = ray.get(ready[0])
                    except Exception as exc:  # a worker's failure arrives wrapped by Ray
                        raise NeurodbgError(f"ray shard {shard} failed: {str(exc).splitlines()[-1][:200]}") \
                            from None
                    checkpoint.save_file(_shard_path(directory, shard, workers),
                                         {"identity": identity, "scanner": state})
                    states[shard] = state
                    bar.advance(1)
        finally:
            if started_here:
                ray.shutdown()
    return [states[s] for s in range(workers)]


def _done(store: AtlasStore, directory: Path, elapsed: float, tokens: int = 0) -> ScanSummary:
    meta = store.meta()
    neurons = records.neuron_count(store)
    return ScanSummary(atlas=str(directory), status=str(meta.get("status")), sequences=int(meta.get("sequences", 0)),
                       tokens=int(meta.get("tokens", 0)), neurons=int(neurons), seconds=round(elapsed, 2),
                       tokens_per_s=round(tokens / elapsed, 1) if elapsed > 0 else 0.0, resumed_from=0)
