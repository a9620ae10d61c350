"""Turn finished scan statistics into atlas rows, written by `atlas.writer` in one
SQLite transaction (all or nothing: a kill during the write leaves the previous state)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from neurodbg.atlas.store import AtlasStore
from neurodbg.atlas.writer import AtlasWriter, rewrite
from neurodbg.errors import NonFiniteError
from neurodbg.model import Model
from neurodbg.scan.output_directions import LogitEffects, logit_effects
from neurodbg.scan.scanner import Scanner

Progress = Callable[[int], None]


def _num(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else float(x)


def check_finite(scanner: Scanner) -> None:
    """Refuse statistics poisoned by a NaN or infinite activation (a NaN mean cannot be stored,
    and an atlas of it would mislead): one NaN makes its neuron's sum NaN for good."""
    for site in scanner.sites:
        stats = scanner.stats.get(site.name)
        if stats is None:
            continue
        bad = ~(torch.isfinite(stats.total) & torch.isfinite(stats.total_sq))
        if bool(bad.any()):
            neuron = int(bad.nonzero()[0])
            raise NonFiniteError(
                f"L{site.layer}/N{neuron} ({site.name}) had NaN or infinite activations within the first "
                f"{stats.n_tokens:,} tokens scanned ({int(bad.sum()):,} of the layer's neurons did); an atlas needs "
                f"finite activations (overflow in float16? load the model in float32, or trace it to see where "
                f"they start)")


def exemplar_sequences(scanner: Scanner) -> set[int]:
    wanted: set[int] = set()
    for stats in scanner.stats.values():
        for ids in (stats.top.ids, stats.bottom.ids):
            wanted.update(int(i) for i in ids.flatten().tolist() if i >= 0)
        wanted.update(int(i) for i in stats.random.ids.tolist() if i >= 0)
    return wanted


def write_atlas(store: AtlasStore, scanner: Scanner, model: Model, sequences: Iterable[Any],
                summary: dict[str, Any], advance: Progress | None = None) -> int:
    """Write every neuron of every scanned site; `sequences` streams the corpus once
    more to collect the token ids of exemplar sequences. Returns neurons written."""
    check_finite(scanner)
    wanted = exemplar_sequences(scanner)
    seq_rows = []
    for seq in sequences:
        if seq.index in wanted:
            seq_rows.append((seq.index, np.asarray(seq.ids, dtype=np.int32).tobytes()))
            if len(seq_rows) == len(wanted):
                break
    return write_rows(store, scanner, model, seq_rows, summary, advance)


def write_rows(store: AtlasStore, scanner: Scanner, model: Model, seq_rows: list[tuple[int, bytes]],
               summary: dict[str, Any], advance: Progress | None,
               image_rows: list[tuple[int, str, int, int, bytes]] | None = None) -> int:
    """Every neuron's rows, the exemplar sequences (or images) and the summary, in one transaction."""
    k_logits = scanner.settings.logit_k
    written = 0
    with rewrite(store) as out:
        out.sequences(seq_rows)
        if image_rows:
            out.images(image_rows)
        for site in scanner.sites:
            stats = scanner.stats.get(site.name)
            if stats is None:
                continue
            layer = int(site.layer or 0)
            effects: LogitEffects | None = None
            if site.name.endswith("mlp.act") and model.adapter is not None and "logits" in model.adapter.sites:
                effects = logit_effects(model, layer, k_logits)
            written += _write_site(out, site.name, layer, stats, effects)
            if advance:
                advance(stats.width)
        first = next(iter(scanner.stats.values()), None)
        sources = {f"{q:g}": first.quantile_source(q) for q in scanner.settings.quantiles} if first else {}
        out.meta(status="complete", quantile_sources=sources, **summary)
    return written


def _pairs(ids: torch.Tensor, values: torch.Tensor) -> str:
    return json.dumps([[int(i), round(float(v), 4)] for i, v in zip(ids.tolist(), values.tolist(), strict=True)])


def _write_site(out: AtlasWriter, site: str, layer: int, stats: Any, effects: LogitEffects | None) -> int:
    mean, std, frac = stats.mean().tolist(), stats.std().tolist(), stats.frac_active().tolist()
    quantiles = {k: v.tolist() for k, v in stats.quantiles().items()}
    hist = stats.hist.to(torch.int32).cpu().numpy()
    top, bottom, rand = stats.top, stats.bottom, stats.random
    top_vals, bot_vals = top.values.cpu(), bottom.values.cpu()
    top_ids, bot_ids = top.ids.cpu(), bottom.ids.cpu()
    top_acts, bot_acts, rand_acts = top.acts.cpu().numpy(), bottom.acts.cpu().numpy(), rand.acts.cpu().numpy()
    rand_ids = rand.ids.cpu().tolist()
    start = 1 if stats.settings.skip_first else 0
    neuron_rows, exemplar_rows = [], []
    for n in range(stats.width):
        q = {key: _num(values[n]) for key, values in quantiles.items()}
        promoted = suppressed = None
        if effects is not None:
            promoted = _pairs(effects.promoted_ids[n], effects.promoted_values[n])
            suppressed = _pairs(effects.suppressed_ids[n], effects.suppressed_values[n])
        neuron_rows.append((layer, n, site, stats.n_tokens, mean[n], std[n], frac[n], _num(float(top_vals[0, n])),
                            _num(float(bot_vals[0, n])), json.dumps(q), hist[n].tobytes(), promoted, suppressed))
        for kind, vals, ids, acts in (("+", top_vals, top_ids, top_acts), ("-", bot_vals, bot_ids, bot_acts)):
            for rank in range(ids.shape[0]):
                seq = int(ids[rank, n])
                if seq >= 0:
                    exemplar_rows.append((layer, n, kind, rank, seq, float(vals[rank, n]), acts[rank, n].tobytes()))
        for rank, seq in enumerate(rand_ids):
            if seq >= 0:
                row = rand_acts[rank, n]
                exemplar_rows.append((layer, n, "r", rank, seq, float(row[start:].max()), row.tobytes()))
    out.neurons(neuron_rows)
    out.exemplars(exemplar_rows)
    return stats.width
