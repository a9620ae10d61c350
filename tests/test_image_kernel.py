"""The C++ image kernel (scan/image_kernel.cpp) against the eager statistics and direct
computations: one site's feature maps or vectors, batch by batch, into every statistic."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from neurodbg.scan import image_kernel
from neurodbg.scan.scanner import as_positions
from neurodbg.scan.site_stats import SiteStats
from neurodbg.scan.stream_batch import StreamBatch
from neurodbg.vision.image_scan import image_settings

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                reason="the C++ image kernel needs a C++ compiler")

# small buffers and sets, so that a few batches fill, compact and turn over every one of them
SETTINGS = replace(image_settings(batch_size=7, top_k=4, random_k=3), tail_capacity=8, hist_every=2, sample_every=3)


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    image_kernel.KERNEL.load()


def _pair(width: int, length: int) -> tuple[SiteStats, SiteStats]:
    eager = SiteStats(width, SETTINGS, length=length, fuse_after=None)
    kernel = SiteStats(width, SETTINGS, length=length, fuse_after=0)
    return eager, kernel


def _feed(eager: SiteStats, kernel: SiteStats, acts: torch.Tensor, ids: list[int]) -> None:
    batch = StreamBatch.of(ids, SETTINGS.sample_every, SETTINGS.hist_every)
    eager.update(as_positions(acts), batch.ids, batch.hashes)
    assert kernel.update_maps(acts, batch)


def _assert_same(eager: SiteStats, kernel: SiteStats) -> None:
    for a, b in ((eager.top, kernel.top), (eager.bottom, kernel.bottom)):
        assert torch.equal(a.ids, b.ids) and torch.equal(a.keys, b.keys) and torch.equal(a.acts, b.acts)
        assert a.last_id == b.last_id
    for name in ("hashes", "ids", "acts"):
        assert torch.equal(getattr(eager.random, name), getattr(kernel.random, name))
    for side, buffer in eager.tails.items():
        assert torch.equal(buffer.sorted_keys(), kernel.tails[side].sorted_keys()), side
    assert torch.equal(eager.active, kernel.active) and torch.equal(eager.hist, kernel.hist)
    assert (eager.n_tokens, eager.n_hist_tokens, eager.n_sample_tokens) == \
        (kernel.n_tokens, kernel.n_hist_tokens, kernel.n_sample_tokens)
    # float32 sums of a batch (~450 values of size ~3) in another order: they differ in rounding
    assert torch.allclose(eager.total, kernel.total, rtol=1e-5, atol=1e-3)
    assert torch.allclose(eager.total_sq, kernel.total_sq, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("shape", [(5, 8, 8), (5, 3, 3), (37, 4, 5), (40,)],
                         ids=["maps-8x8", "maps-3x3", "maps-4x5", "vectors"])
def test_image_kernel_equals_the_eager_statistics(shape: tuple[int, ...]) -> None:
    """Maps whose positions fill whole vector lanes, fall short of one, or leave a remainder, and
    vectors (one value per image): rectified channels whose maps tie at zero, maps repeated in
    later images (equal keys: the smaller image index ranks first), a value past fp16's range,
    and a batch of images indexed below those already kept (their ties win)."""
    generator = torch.Generator().manual_seed(7)
    width = shape[0]
    eager, kernel = _pair(width, int(np.prod(shape[1:])) if len(shape) > 1 else 1)
    starts = [0, 7, 14, 40, 21, 47]
    previous: torch.Tensor | None = None
    for n, start in enumerate(starts):
        acts = torch.randn((7, *shape), generator=generator) * 3
        acts[:, : width // 2] = acts[:, : width // 2].clamp_min(0)        # rectified: ties at 0
        acts[3] = acts[1]                                                 # equal keys in one batch
        if previous is not None:
            acts[0] = previous[2]                                         # and across batches
        if n == 2:
            acts[4, 1].view(-1)[-1] = 1e6                                 # clamped in the fp16 copies
        previous = acts
        _feed(eager, kernel, acts.contiguous(), list(range(start, start + 7)))
        _assert_same(eager, kernel)


def test_a_map_holding_nan_enters_nothing() -> None:
    """A broken model's NaN: its map's extremes are NaN (as amax and amin), which beat no
    threshold, so it enters no exemplar set and none of its values a tail buffer; the histogram
    counts the NaN in the last bin and the sums go NaN (which the scan then refuses)."""
    generator = torch.Generator().manual_seed(10)
    stats = SiteStats(3, SETTINGS, length=20, fuse_after=0)
    for start in (0, 7):
        acts = torch.randn((7, 3, 4, 5), generator=generator)
        if start:
            acts[2, 1] = 50.0                       # beyond everything kept...
            acts[2, 1, 3, 4] = float("nan")         # ...but broken
        batch = StreamBatch.of(list(range(start, start + 7)), 1, 1)   # every image sampled and counted
        assert stats.update_maps(acts, batch)
    for exemplars in (stats.top, stats.bottom):
        assert 9 not in exemplars.ids[:, 1].tolist()
    for buffer in stats.tails.values():
        assert not buffer.keys.isnan().any() and float(buffer.sorted_keys()[:, 1].abs().max()) < 50.0
    assert int(stats.hist[1, -1]) >= 1 and stats.total[1].isnan() and not stats.total[[0, 2]].isnan().any()


def test_image_kernel_state_replaced_by_a_merge_is_followed() -> None:
    """A merge or a load rebinds a site's tensors: the kernel then works on the new ones."""
    generator = torch.Generator().manual_seed(8)
    eager, kernel = _pair(6, 16)
    other_eager, other_kernel = _pair(6, 16)
    for start in (0, 7):
        _feed(eager, kernel, torch.randn((7, 6, 4, 4), generator=generator), list(range(start, start + 7)))
        _feed(other_eager, other_kernel, torch.randn((7, 6, 4, 4), generator=generator),
              list(range(start + 100, start + 107)))
    eager.merge(other_eager)
    kernel.merge(other_kernel)
    _feed(eager, kernel, torch.randn((7, 6, 4, 4), generator=generator) * 4, list(range(200, 207)))
    _assert_same(eager, kernel)


def test_image_kernel_bins_are_the_searchs() -> None:
    """The kernel's histogram bins (a lookup by a value's leading bits, then the edges) are
    numpy's search against the published float64 edges for every value: exactly on an edge, one
    float32 step either side, signed zeros, infinities, the smallest subnormals, the largest
    floats, NaN (the last bin)."""
    settings = replace(SETTINGS, hist_every=1)
    edges = np.array(settings.hist_edges())
    inner = torch.tensor(edges[1:-1], dtype=torch.float32)
    on_edges = torch.cat([inner, -inner])
    values = torch.cat([on_edges, torch.nextafter(on_edges, torch.tensor(float("inf"))),
                        torch.nextafter(on_edges, torch.tensor(-float("inf"))),
                        torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-45, -1e-45,
                                      3.4e38, -3.4e38, 1e-38, -1e-38]),
                        torch.randn(1000, generator=torch.Generator().manual_seed(9)) * 100])
    values = values[: values.numel() // 16 * 16].view(-1, 16)      # images of 16 one-value columns
    stats = SiteStats(16, settings, length=1, fuse_after=0)
    batch = StreamBatch.of(list(range(values.shape[0])), settings.sample_every, settings.hist_every)
    assert stats.update_maps(values.contiguous(), batch)
    flat = values.double().numpy()
    want = np.stack([np.bincount(np.searchsorted(edges[1:-1], flat[:, n], side="right"), minlength=128)
                     for n in range(16)])
    assert np.array_equal(stats.hist.numpy(), want)


def test_maps_the_kernel_does_not_take_go_to_the_other_code() -> None:
    """Token activations [B, L, W], a non-contiguous map, float64, settings whose state the kernel
    cannot hold, or a scanner that asked for the eager code (fuse_after None): `update_maps`
    declines and changes nothing."""
    stats = SiteStats(4, SETTINGS, length=9, fuse_after=0)
    batch = StreamBatch.of(list(range(2)), 3, 2)
    for acts in (torch.randn(2, 9, 4), torch.randn(2, 3, 3, 4).permute(0, 3, 1, 2),
                 torch.randn(2, 4, 3, 3, dtype=torch.float64)):
        assert not stats.update_maps(acts, batch)
    assert not SiteStats(4, SETTINGS, length=9, fuse_after=None).update_maps(torch.randn(2, 4, 3, 3), batch)
    assert not SiteStats(4, replace(SETTINGS, hist_bins=300), length=9, fuse_after=0).update_maps(
        torch.randn(2, 4, 3, 3), batch)      # more bins than the kernel's table holds
    assert stats.n_tokens == 0 and int(stats.hist.sum()) == 0
