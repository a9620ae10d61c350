"""The streaming structures of a scan against brute force on synthetic streams
long enough to reach every path: dense merges early, sparse candidates later,
compactions, columns flooded by one batch, exemplar rows reused, several sets
merged side by side, and shards merged afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodbg.scan import site_stats, tails
from neurodbg.scan.exemplars import Candidates, ExemplarSet
from neurodbg.scan.random_exemplars import RandomExemplars, hash_ids
from neurodbg.scan.settings import ScanSettings
from neurodbg.scan.site_stats import SiteStats
from neurodbg.scan.tails import TailBuffer


def _stream(batches: int, batch: int, length: int, width: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for b in range(batches):
        x = torch.randn(batch, length, width, generator=gen) * torch.rand(width, generator=gen)
        x = (x * 4).round() / 4   # many ties
        if b % 9 == 5:            # now and then a batch floods a few columns with large values
            x[:, :, : width // 5] += 3 + b / 10
        out.append(x)
    return out


def _brute_exemplars(acts: torch.Tensor, ids: torch.Tensor, k: int, sign: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """acts [S, L, W] of sequences `ids`: per column, the top k by (sign * max, then id)."""
    scores = (acts * sign).amax(1)                                  # [S, W]
    keys, order_ids, rows = [], [], []
    for col in range(acts.shape[2]):
        ranked = sorted(range(len(ids)), key=lambda s: (-float(scores[s, col]), int(ids[s])))[:k]
        keys.append(scores[ranked, col])
        order_ids.append(ids[ranked])
        rows.append(acts[ranked, :, col].half())
    return torch.stack(keys, 1), torch.stack(order_ids, 1), torch.stack(rows, 1)


@pytest.mark.parametrize(("k", "batch", "shuffled"), [(5, 4, False), (3, 8, False), (3, 8, True)])
def test_exemplars_equal_brute_force_alone_side_by_side_and_merged(k: int, batch: int, shuffled: bool) -> None:
    """Also with batches larger than k (each column's best k candidates are merged), and
    with ids out of order within a batch (ties then break by id, not by row)."""
    length, width = 6, 12
    stream = _stream(40, batch, length, 2 * width, seed=1)
    ids = [torch.arange(batch) + batch * b for b in range(len(stream))]
    if shuffled:
        gen = torch.Generator().manual_seed(3)
        ids = [seq[torch.randperm(batch, generator=gen)] for seq in ids]
    everything, all_ids = torch.cat(stream), torch.cat(ids)
    for sign in (+1, -1):
        alone = ExemplarSet(k, 2 * width, length, sign)
        left, right = ExemplarSet(k, width, length, sign), ExemplarSet(k, width, length, sign)
        joined = ExemplarSet.joined([left, right])
        shards = [ExemplarSet(k, 2 * width, length, sign) for _ in range(3)]
        for b, (acts, seq) in enumerate(zip(stream, ids, strict=True)):
            scores = acts.amax(1) if sign > 0 else acts.amin(1)
            alone.update(scores, seq, acts)
            parts = [(0, left.candidates(scores[:, :width], acts[:, :, :width])),
                     (width, right.candidates(scores[:, width:], acts[:, :, width:]))]
            joined.absorb(Candidates.side_by_side(parts), seq)
            shards[b % 3].update(scores, seq, acts)
        for shard in shards[1:]:
            shards[0].merge(shard)
        keys, want_ids, want_acts = _brute_exemplars(everything, all_ids, k, sign)
        for got in (alone, joined, shards[0]):
            assert torch.equal(got.keys, keys) and torch.equal(got.ids, want_ids) and torch.equal(got.acts, want_acts)
        # the parts are views of the joined set: each holds its own columns
        assert torch.equal(left.acts, want_acts[:, :width]) and torch.equal(right.ids, want_ids[:, width:])


def test_random_sample_equals_brute_force_alone_side_by_side_and_merged() -> None:
    """The k sequences with the smallest hashed index, with their activations, whatever the
    batching: entrants reuse the store rows of the sequences they push out (many entries
    early, a few later), also in a joined set whose parts view it, and across shards."""
    k, length, width, batch = 4, 5, 6, 3
    stream = _stream(30, batch, length, 2 * width, seed=5)
    ids = [torch.arange(batch) + batch * b for b in range(len(stream))]
    alone = RandomExemplars(k, 2 * width, length)
    left, right = RandomExemplars(k, width, length), RandomExemplars(k, width, length)
    left.update(ids[0], stream[0][:, :, :width])       # the parts hold state before they are joined
    right.update(ids[0], stream[0][:, :, width:])
    joined = RandomExemplars.joined([left, right])
    shards = [RandomExemplars(k, 2 * width, length) for _ in range(3)]
    for b, (acts, seq) in enumerate(zip(stream, ids, strict=True)):
        alone.update(seq, acts)
        if b:
            joined.update(seq, acts)
        shards[b % 3].update(seq, acts)
    for shard in shards[1:]:
        shards[0].merge(shard)
    everything, all_ids = torch.cat(stream), torch.cat(ids)
    hashes = hash_ids(all_ids)
    chosen = torch.argsort(hashes, stable=True)[:k]
    want_acts = everything[chosen].permute(0, 2, 1).half()
    assert not torch.equal(alone.slots, torch.arange(k))   # rows were reused, not rewritten in order
    for got in (alone, joined, shards[0]):
        assert torch.equal(got.ids, all_ids[chosen]) and torch.equal(got.hashes, hashes[chosen])
        assert torch.equal(got.acts, want_acts)
    assert torch.equal(left.acts, want_acts[:, :width]) and torch.equal(right.acts, want_acts[:, width:])
    restored = RandomExemplars(k, 2 * width, length)
    restored.load_state_dict(alone.state_dict())
    assert torch.equal(restored.acts, want_acts) and torch.equal(restored.ids, all_ids[chosen])


@pytest.mark.parametrize("in_place", [False, True], ids=["transposed compare (CPU)", "in-place compare (GPU)"])
def test_tail_buffer_keeps_the_exact_top_capacity(in_place: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tails, "compare_in_place", lambda tokens: in_place)
    capacity, blocks, size, width = 16, 3, 5, 20
    stream = _stream(60, 4, blocks * size, width, seed=2)
    for sign in (+1, -1):
        buffer = TailBuffer(capacity, width, sign)
        shards = [TailBuffer(capacity, width, sign) for _ in range(2)]
        for b, tokens in enumerate(stream):
            grouped = tokens.view(4, blocks, size, width)
            extremes = grouped.amax(2) if sign > 0 else grouped.amin(2)
            buffer.update(grouped, extremes)
            shards[b % 2].update(grouped, extremes)
        shards[0].merge(shards[1])
        flat = torch.cat(stream).reshape(-1, width) * sign
        want = flat.sort(dim=0, descending=True).values[:capacity]
        assert torch.equal(buffer.sorted_keys(), want)
        assert torch.equal(shards[0].sorted_keys(), want)


def test_histogram_bins_equal_the_published_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Binary search (GPU) and the asinh formula settled by the edges either side (CPU) put
    every value, also one exactly at an edge or one float32 step beside it, in the bin the
    published float64 edges say. Neither fails on NaN."""
    settings = ScanSettings(seq_len=8, hist_every=1)   # every sequence goes into the histogram
    edges = np.array(settings.hist_edges())
    gen = torch.Generator().manual_seed(4)
    width = 64
    values = torch.randn(4, 8, width, generator=gen) * torch.exp(3 * torch.randn(width, generator=gen))
    values[0, 3, :5] = float("nan")   # a broken model's NaN: counted in the last bin, as numpy sorts it
    on_edges = torch.tensor(edges[1:-1], dtype=torch.float32)[torch.randint(0, 127, (4, 8, width), generator=gen)]
    beside = torch.nextafter(on_edges, torch.where(values > 0, 1.0, -1.0) * torch.tensor(float("inf")))
    acts = torch.cat([values, on_edges, beside])
    for by_search in (True, False):
        monkeypatch.setattr(site_stats, "bins_by_search", lambda flat, by_search=by_search: by_search)
        stats = SiteStats(width, settings)
        stats.update(acts, torch.arange(acts.shape[0]))
        flat = acts[:, 1:].reshape(-1, width).double().numpy()   # position 0 is skipped
        want = np.stack([np.bincount(np.searchsorted(edges[1:-1], flat[:, n], side="right"), minlength=128)
                         for n in range(width)])
        assert stats.n_hist_tokens == flat.shape[0]
        assert np.array_equal(stats.hist.numpy(), want)


def test_histogram_and_sampled_tails_read_their_own_subsamples() -> None:
    """The histogram counts every `hist_every`-th sequence, the sampled tails keep the
    exact top values of every `sample_every`-th; each with its own token count."""
    settings = ScanSettings(seq_len=10, hist_every=3, sample_every=2, tail_capacity=8)
    width, batch = 5, 4
    stream = _stream(9, batch, 10, width, seed=6)
    stats = SiteStats(width, settings)
    for b, acts in enumerate(stream):
        stats.update(acts, torch.arange(batch) + batch * b)
    everything = torch.cat(stream)[:, 1:]                  # position 0 is skipped
    ids = torch.arange(everything.shape[0])
    shown, sampled = everything[ids % 3 == 0], everything[ids % 2 == 0]
    assert stats.n_hist_tokens == shown.shape[0] * 9 and stats.n_sample_tokens == sampled.shape[0] * 9
    assert torch.equal(stats.hist.sum(1), torch.full((width,), shown.shape[0] * 9))
    edges = np.array(settings.hist_edges())
    flat = shown.reshape(-1, width).double().numpy()
    # (no value of this seed lies within float32 rounding of an edge)
    want = np.stack([np.bincount(np.searchsorted(edges[1:-1], flat[:, n], side="right"), minlength=128)
                     for n in range(width)])
    assert np.array_equal(stats.hist.numpy(), want)
    top = sampled.reshape(-1, width).sort(dim=0, descending=True).values[:8]
    assert torch.equal(stats.tails["upper_sample"].sorted_keys(), top)
