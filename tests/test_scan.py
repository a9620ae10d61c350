"""Scans against brute force: exemplars, quantiles, moments and output tokens of
a tiny model over a small real corpus, recomputed independently with manual hooks."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch
from scan_fixtures import tiny_model, write_corpus

import neurodbg
from neurodbg.atlas import AtlasStore, records
from neurodbg.corpus import open_corpus, sequences
from neurodbg.errors import NonFiniteError, ScanMemoryError
from neurodbg.scan import ScanSettings, checkpoint, scan

SETTINGS = ScanSettings(seq_len=16, batch_size=4, top_k=5, random_k=3, tail_capacity=64, hist_every=1,
                        sample_every=1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, default_model: neurodbg.Model):
    tmp = tmp_path_factory.mktemp("scan")
    model = tiny_model(default_model.tokenizer)
    corpus = open_corpus(str(write_corpus(tmp / "corpus.jsonl")))
    summary = scan(model, corpus, tmp / "atlas", SETTINGS, progress=False)
    return model, corpus, tmp / "atlas", summary


def _brute_force(model: neurodbg.Model, corpus) -> tuple[list[int], dict[int, torch.Tensor]]:
    """Every sequence's per-token mlp.act, from manual hooks on down_proj."""
    seqs = list(sequences(corpus, model.tokenizer, seq_len=SETTINGS.seq_len))
    acts: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    layers = model.module.model.layers
    handles = [layers[i].mlp.down_proj.register_forward_pre_hook(
        lambda m, a, i=i: acts[i].append(a[0].detach().clone())) for i in range(2)]
    try:
        with torch.no_grad():
            for s in seqs:
                model.module(torch.tensor([s.ids]))
    finally:
        for h in handles:
            h.remove()
    return [s.index for s in seqs], {i: torch.cat(v) for i, v in acts.items()}   # [S, L, d]


def test_summary(setup) -> None:
    _, _, _, summary = setup
    assert summary.status == "complete"
    assert summary.neurons == 2 * 48
    assert summary.tokens == summary.sequences * 16 and summary.sequences > 20


def test_exemplars_quantiles_and_moments_match_brute_force(setup) -> None:
    model, corpus, atlas, _ = setup
    index, acts = _brute_force(model, corpus)
    store = AtlasStore.open(atlas)
    for layer in (0, 1):
        a = acts[layer]                               # [S, L, d]
        counted = a[:, 1:]                            # position 0 (attention sink) is skipped
        seq_max, seq_min = counted.amax(1), counted.amin(1)
        flat = counted.reshape(-1, a.shape[-1]).double().numpy()
        for n in range(0, 48, 7):
            rec = records.neuron(store, layer, n)
            top = sorted(range(len(index)), key=lambda s: (-float(seq_max[s, n]), index[s]))[:5]
            bottom = sorted(range(len(index)), key=lambda s: (float(seq_min[s, n]), index[s]))[:5]
            assert [e.seq_index for e in rec.exemplars["+"]] == [index[s] for s in top]
            assert [e.seq_index for e in rec.exemplars["-"]] == [index[s] for s in bottom]
            for ex, s in zip(rec.exemplars["+"], top, strict=True):
                assert ex.value == pytest.approx(float(seq_max[s, n]), rel=1e-6)
                assert np.array_equal(np.array(ex.acts, dtype=np.float16), a[s, :, n].half().numpy())
            assert len(rec.exemplars["r"]) == 3
            for q in SETTINGS.quantiles:
                hi, lo = rec.quantiles[f"+{q:g}"], rec.quantiles[f"-{q:g}"]
                assert hi == pytest.approx(np.quantile(flat[:, n], 1 - q), rel=1e-5, abs=1e-6)
                assert lo == pytest.approx(np.quantile(flat[:, n], q), rel=1e-5, abs=1e-6)
            assert rec.mean == pytest.approx(flat[:, n].mean(), rel=1e-6, abs=1e-9)
            assert rec.std == pytest.approx(flat[:, n].std(), rel=1e-5, abs=1e-9)
            assert rec.frac_active == (flat[:, n] > 0).mean()
            _assert_histogram(rec.hist, flat[:, n], SETTINGS)
            assert rec.n_tokens == flat.shape[0]


def _assert_histogram(hist: list[int], values: np.ndarray, settings: ScanSettings) -> None:
    """Counts per published bin (`hist_edges`), within the stated error of the CPU's float32
    asinh binning: a value within 1e-4 of a bin width from an edge may be counted in the
    neighbouring bin (a GPU bins by exact search; tests/test_scan_streaming.py)."""
    edges = np.array(settings.hist_edges())
    want = np.bincount(np.searchsorted(edges[1:-1], values, side="right"), minlength=settings.hist_bins)
    top = math.asinh(settings.hist_limit / settings.hist_scale)
    position = (np.arcsinh(values / settings.hist_scale) + top) / (2 * top / settings.hist_bins)
    near_an_edge = int((np.abs(position - np.round(position)) < 1e-4).sum())
    assert sum(hist) == len(values)
    assert int(np.abs(np.array(hist) - want).sum()) <= 2 * near_an_edge


def test_sampled_quantiles_are_exact_on_the_sample_and_within_the_stated_error(setup, tmp_path) -> None:
    """Levels too deep for the all-token buffer come from the every-n-th-sequence sample:
    exactly that sample's quantile, and (the stated error) the share of all tokens beyond
    it is q within 4 binomial standard deviations of the sample size."""
    model, corpus, _, _ = setup
    settings = ScanSettings(seq_len=16, batch_size=4, top_k=5, random_k=3, tail_capacity=64, sample_every=2,
                            quantiles=(0.01, 0.002))
    scan(model, corpus, tmp_path / "atlas", settings, progress=False)
    store = AtlasStore.open(tmp_path / "atlas")
    assert store.meta()["quantile_sources"] == {"0.01": "sampled", "0.002": "exact"}
    index, acts = _brute_force(model, corpus)
    sample = [i for i, s in enumerate(index) if s % 2 == 0]
    for layer in (0, 1):
        flat = acts[layer][:, 1:].reshape(-1, 48).double().numpy()
        sampled = acts[layer][sample, 1:].reshape(-1, 48).double().numpy()
        sd = np.sqrt(0.01 * 0.99 / sampled.shape[0])
        for n in range(0, 48, 5):
            rec = records.neuron(store, layer, n)
            hi, lo = rec.quantiles["+0.01"], rec.quantiles["-0.01"]
            assert hi == pytest.approx(np.quantile(sampled[:, n], 0.99), rel=1e-5, abs=1e-6)
            assert lo == pytest.approx(np.quantile(sampled[:, n], 0.01), rel=1e-5, abs=1e-6)
            assert abs((flat[:, n] > hi).mean() - 0.01) <= 4 * sd
            assert abs((flat[:, n] < lo).mean() - 0.01) <= 4 * sd
            assert rec.quantiles["+0.002"] == pytest.approx(np.quantile(flat[:, n], 0.998), rel=1e-5, abs=1e-6)


def test_output_tokens_match_direct_matrix_computation(setup) -> None:
    model, _, atlas, _ = setup
    store = AtlasStore.open(atlas)
    inner = model.module.model
    gamma = inner.norm.weight.detach()
    unembed = model.module.lm_head.weight.detach()             # [V, hidden]
    for layer in (0, 1):
        w = inner.layers[layer].mlp.down_proj.weight.detach()  # [hidden, d]
        logits = unembed @ (gamma[:, None] * w)                # [V, d]
        for n in (0, 13, 47):
            rec = records.neuron(store, layer, n)
            assert [t for t, _ in rec.promoted] == logits[:, n].topk(10).indices.tolist()
            assert [t for t, _ in rec.suppressed] == logits[:, n].topk(10, largest=False).indices.tolist()


def test_sharded_scans_merge_to_the_same_atlas(setup, tmp_path) -> None:
    from neurodbg.scan.runner import sequence_stream
    from neurodbg.scan.scanner import Scanner

    model, corpus, _, _ = setup
    whole, parts = Scanner(model, SETTINGS), [Scanner(model, SETTINGS) for _ in range(3)]
    for batch in _batches(sequence_stream(corpus, model, SETTINGS)):
        whole.process(batch)
    for i, part in enumerate(parts):
        for batch in _batches(sequence_stream(corpus, model, SETTINGS, shard=(i, 3))):
            part.process(batch)
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    _assert_same_statistics(whole, merged)


def test_wide_scanner_equals_per_layer_and_resumes(setup) -> None:
    """All layers updated at once (the default on GPUs and many-core CPUs) gives the same
    statistics as layer by layer, also when its state is saved and loaded mid-scan."""
    import io

    from neurodbg.scan.runner import sequence_stream
    from neurodbg.scan.scanner import Scanner

    model, corpus, _, _ = setup
    batches = list(_batches(sequence_stream(corpus, model, SETTINGS)))
    per_layer, wide = Scanner(model, SETTINGS, wide=False), Scanner(model, SETTINGS, wide=True)
    for batch in batches:
        per_layer.process(batch)
        wide.process(batch)
    assert wide._wide_stats is not None and per_layer._wide_stats is None
    _assert_same_statistics(per_layer, wide)

    first = Scanner(model, SETTINGS, wide=True)
    for batch in batches[: len(batches) // 2]:
        first.process(batch)
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    resumed = Scanner(model, SETTINGS, wide=True)
    resumed.load_state_dict(torch.load(io.BytesIO(saved.getvalue())))
    for batch in batches[len(batches) // 2:]:
        resumed.process(batch)
    _assert_same_statistics(per_layer, resumed)


NEEDS_CXX = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                               reason="torch.compile and the C++ layer kernel need a C++ compiler")


@NEEDS_CXX
@pytest.mark.parametrize(("path", "wide"), [("kernel", False), ("kernel", True), ("compiled", False)],
                         ids=["C++ layer kernel", "C++ layer kernel, all layers at once", "compiled reductions"])
def test_settled_paths_equal_the_eager_statistics(setup, monkeypatch: pytest.MonkeyPatch, path: str,
                                                  wide: bool) -> None:
    """What a CPU scan switches to after its first tokens (the C++ layer kernel, or the
    compiled reductions where the kernel cannot be built) gives the same exemplars, tails,
    histogram and counts as the eager code, and sums within float32 rounding; a resumed
    scan switches at the same point."""
    import io

    from neurodbg.scan import layer_kernel, site_stats
    from neurodbg.scan.runner import sequence_stream
    from neurodbg.scan.scanner import Scanner

    model, corpus, _, _ = setup
    batches = list(_batches(sequence_stream(corpus, model, SETTINGS)))
    if path == "compiled":
        monkeypatch.setattr(layer_kernel, "available", lambda acts: False)
    target = (layer_kernel, "layer_stats") if path == "kernel" else (site_stats, "fused_reductions")
    original = getattr(*target)
    calls = []

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(*target, counting)
    eager = Scanner(model, SETTINGS, wide=False, fuse_after=None)
    settle = 3 * SETTINGS.batch_size * (SETTINGS.seq_len - 1)
    settled = Scanner(model, SETTINGS, wide=wide, fuse_after=settle)
    for batch in batches:
        eager.process(batch)
        settled.process(batch)
    full = sum(len(b) == SETTINGS.batch_size for b in batches)
    assert len(batches[-1]) < SETTINGS.batch_size == len(batches[0]) and full == len(batches) - 1
    # from the 4th batch: once per layer (2), or once for all layers; the compiled reductions
    # only for full batches (a partial one would compile anew)
    taken = len(batches) - 3 if path == "kernel" else full - 3
    assert calls and all(calls) and len(calls) == (1 if wide else 2) * taken
    _assert_same_statistics(eager, settled)

    first = Scanner(model, SETTINGS, wide=wide, fuse_after=settle)
    for batch in batches[:2]:
        first.process(batch)
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    resumed = Scanner(model, SETTINGS, wide=wide, fuse_after=settle)
    resumed.load_state_dict(torch.load(io.BytesIO(saved.getvalue())))
    for batch in batches[2:]:
        resumed.process(batch)
    _assert_same_statistics(settled, resumed)
    for name, stats in settled.stats.items():   # same path, same bits
        assert torch.equal(stats.total, resumed.stats[name].total)
        assert torch.equal(stats.total_sq, resumed.stats[name].total_sq)


@NEEDS_CXX
@pytest.mark.parametrize("layout", ["rows", "channels"])
def test_layer_kernel_equals_brute_force(layout: str) -> None:
    """The C++ layer kernel against direct tensor computations: sums, exemplar candidates
    (ties enter) with their fp16 activations, and tail buffers updated in place (compacted
    mid-batch) that keep the exact best values of each side's sequences, in a state the eager
    code can go on from. Both memory layouts: rows (tokens) and channel-major (a convolution's
    output seen as positions, read where it lies)."""
    from neurodbg.scan import layer_kernel
    from neurodbg.scan.tails import TailBuffer

    generator = torch.Generator().manual_seed(5)
    batch, length, width, size, capacity = 5, 22, 600, 7, 6     # 21 counted tokens, 3 blocks of 7
    if layout == "channels":
        length = 141     # (the kernel reads maps of 128 positions or more where they lie)
    acts = torch.randn(batch, length, width, generator=generator) * 2
    acts[1, 4, 9] = 1e6                                   # clamped to fp16's largest in the exemplar copy
    acts[:, 0] = 50.0                                     # the skipped position never counts
    if layout == "channels":
        acts = acts.transpose(1, 2).contiguous().transpose(1, 2)
    counted = acts[:, 1:]
    hi, lo = counted.amax(1), counted.amin(1)
    thresholds = torch.stack([torch.full((width,), 4.0), torch.full((width,), 4.5)])
    thresholds[0, 3] = hi[2, 3]                           # a tie enters
    signs = [1, -1, 1, -1]
    rows = torch.tensor([[True] * batch, [True] * batch, [False, True, False, False, True], [False] * batch])
    earlier = torch.randn(2, 3, size, width, generator=generator)   # a batch the eager code took
    tails = [TailBuffer(capacity, width, sign) for sign in signs]
    for buffer in tails:
        buffer.update(earlier, earlier.amax(2) if buffer.sign > 0 else earlier.amin(2))
    bounds_before = [buffer.bound.clone() for buffer in tails]
    totals = [torch.full((width,), 0.5, dtype=torch.float64), torch.zeros(width, dtype=torch.float64),
              torch.full((width,), 3)]
    found = layer_kernel.layer_stats(acts, size, True, list(thresholds), tails, rows.flatten().long().tolist(),
                                     totals)
    assert found is not None
    x = counted.double()
    assert torch.allclose(totals[0], 0.5 + x.sum((0, 1)), rtol=1e-6, atol=1e-4)
    assert torch.allclose(totals[1], (x * x).sum((0, 1)), rtol=1e-6)
    assert torch.equal(totals[2], 3 + (counted > 0).sum((0, 1)))
    for (cols, found_rows, keys, copies), key, threshold in zip(found, (hi, -lo), thresholds, strict=True):
        want_cols, want_rows = (key >= threshold).T.nonzero().unbind(1)
        assert torch.equal(cols, want_cols) and torch.equal(found_rows, want_rows)
        assert torch.equal(keys, key[want_rows, want_cols])
        assert torch.equal(copies, acts[want_rows, :, want_cols].clamp(-65504, 65504).half())
    assert 3 in found[0][0].tolist() and 9 in found[0][0].tolist()
    later = torch.randn(3, 3, size, width, generator=generator)      # and the eager code goes on
    for buffer, sign, read, before in zip(tails, signs, rows, bounds_before, strict=True):
        assert (buffer.bound != before).any() == bool(read.any())   # compacted in the kernel
        assert bool((buffer.keys == float("-inf")).sum(1).ge(2 * capacity - buffer.fill).all())
        seen = [earlier.reshape(-1, width), counted[read].reshape(-1, width)]
        want = (torch.cat(seen) * sign).sort(dim=0, descending=True).values[:capacity]
        assert torch.equal(buffer.sorted_keys(), want)
        buffer.update(later, later.amax(2) if sign > 0 else later.amin(2))
        want = (torch.cat([*seen, later.reshape(-1, width)]) * sign).sort(dim=0, descending=True).values[:capacity]
        assert torch.equal(buffer.sorted_keys(), want)

    # a row the eager code left full (it compacts only when more would not fit) is compacted
    # before the next insert, not written past its end into the next neuron's row
    full = TailBuffer(2, 2, +1)
    for pair in ([1.0, 2.0], [3.0, 4.0]):
        full.append(torch.tensor(pair), torch.tensor([0, 0]))
    assert full.fill.tolist() == [4, 0]
    acts = torch.zeros(1, 8 if layout == "rows" else 134, 2)
    acts[0, 3, 0], acts[0, 2:5, 1] = 10.0, torch.tensor([5.0, 6.0, 7.0])
    if layout == "channels":
        acts = acts.transpose(1, 2).contiguous().transpose(1, 2)
    sums = [torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.long)]
    assert layer_kernel.layer_stats(acts, 7, True, [torch.zeros(2)] * 2, [full], [1], sums) is not None
    assert full.sorted_keys().T.tolist() == [[10.0, 4.0], [7.0, 6.0]]


def _note_image_kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[int, ...], bool]]:
    """Each `SiteStats.update_maps` call from now on, as (the output's shape past the batch,
    whether the image kernel took it)."""
    from neurodbg.scan import site_stats

    taken: list[tuple[tuple[int, ...], bool]] = []
    original = site_stats.SiteStats.update_maps

    def noting(self, acts, batch):
        done = original(self, acts, batch)
        taken.append((tuple(acts.shape[1:]), done))
        return done

    monkeypatch.setattr(site_stats.SiteStats, "update_maps", noting)
    return taken


@NEEDS_CXX
def test_image_scans_by_the_image_kernel_equal_the_eager_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image scan through the C++ image kernel (every site, every batch, from the first: maps
    of 16x16 and 8x8, the pooled vector, the logits) gives the eager code's exemplars, tails,
    histogram and counts, and its sums within float32 rounding; resumed from a checkpoint, the
    same bits."""
    import io

    from neurodbg.scan import image_kernel
    from neurodbg.scan.scanner import Scanner
    from neurodbg.vision.image_scan import image_scan_sites, image_settings

    image_kernel.KERNEL.load()
    model = neurodbg.load_model("digits", progress=False)
    sites = image_scan_sites(model)
    settings = image_settings(batch_size=8, top_k=5, random_k=3)
    taken = _note_image_kernel_calls(monkeypatch)
    eager = Scanner(model, settings, wide=False, fuse_after=None, sites=sites)
    kernel = Scanner(model, settings, wide=False, sites=sites)
    first = Scanner(model, settings, wide=False, sites=sites)
    generator = torch.Generator().manual_seed(2)
    batches = []
    for start in range(0, 48, 8):
        pixels = torch.rand((8, 1, 16, 16), generator=generator)
        pixels[0, 0, :4] = 0.0             # ties at a rectifier's zero
        batches.append((pixels, list(range(start, start + 8))))
    for n, (pixels, ids) in enumerate(batches):
        for scanner in (eager, kernel, first) if n < 2 else (eager, kernel):
            scanner.forward(pixels, ids)
    kernel_calls = [shape for shape, done in taken if done]
    assert len(kernel_calls) == len(sites) * (6 + 2) and {(16, 16, 16), (64, 8, 8), (64,), (10,)} <= set(kernel_calls)
    _assert_same_statistics(eager, kernel)

    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    resumed = Scanner(model, settings, wide=False, sites=sites)
    resumed.load_state_dict(torch.load(io.BytesIO(saved.getvalue())))
    for pixels, ids in batches[2:]:
        resumed.forward(pixels, ids)
    _assert_same_statistics(kernel, resumed)
    for name, stats in kernel.stats.items():   # same path, same bits
        assert torch.equal(stats.total, resumed.stats[name].total)
        assert torch.equal(stats.total_sq, resumed.stats[name].total_sq)


@NEEDS_CXX
def test_a_vision_transformer_scan_mixes_the_token_and_image_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """A vision transformer's token sites take the text path (layer kernel once settled) and its
    logits the image kernel, in one scanner; together they equal the eager statistics."""
    from neurodbg.scan import image_kernel
    from neurodbg.scan.scanner import Scanner
    from neurodbg.vision.image_scan import image_scan_sites, image_settings
    from neurodbg.vision.torchvision_import import import_torchvision

    image_kernel.KERNEL.load()
    torch.manual_seed(0)
    module = import_torchvision().models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                           hidden_dim=16, mlp_dim=32, num_classes=3).eval()
    model = neurodbg.load_model(module)
    sites = image_scan_sites(model)
    settings = image_settings(batch_size=8, top_k=5, random_k=3)
    calls = _note_image_kernel_calls(monkeypatch)
    eager = Scanner(model, settings, wide=False, fuse_after=None, sites=sites)
    mixed = Scanner(model, settings, wide=False, fuse_after=3 * 8 * 17, sites=sites)
    generator = torch.Generator().manual_seed(3)
    for start in range(0, 48, 8):
        pixels = torch.rand((8, 3, 32, 32), generator=generator)
        for scanner in (eager, mixed):
            scanner.forward(pixels, list(range(start, start + 8)))
    assert [s.name for s in sites] == ["layers.0.mlp.act", "layers.1.mlp.act", "logits"]
    assert calls.count(((3,), True)) == 6 and {shape for shape, _ in calls} == {(3,)}   # only the logits: [B, 3]
    _assert_same_statistics(eager, mixed)


@NEEDS_CXX
def test_compiled_reductions_equal_their_eager_function() -> None:
    from neurodbg.scan import fused

    acts = torch.randn(3, 20, 7) * 3
    acts[0, 0] = 1e4   # the skipped position
    out = fused.fused_reductions(acts, 19, True)
    assert out is not None
    reference = fused.reductions(acts, 19, True)   # the same function, not compiled
    for got, want in zip(out, reference, strict=True):
        assert got.shape == want.shape
        assert torch.allclose(got.double(), want.double(), rtol=1e-6, atol=1e-5)
    counted = acts[:, 1:]
    assert torch.equal(out[0], counted.amax(1, keepdim=True)) and torch.equal(out[3], counted.amin(1))
    assert torch.equal(out[6].double(), (counted > 0).sum((0, 1)).double())   # a count (on a CPU in float32, exact)
    assert torch.allclose(out[4].double(), counted.double().sum((0, 1)), rtol=1e-5, atol=1e-4)


def _assert_same_statistics(whole, other_scanner) -> None:
    assert other_scanner.sequences == whole.sequences
    for name, stats in whole.stats.items():
        other = other_scanner.stats[name]
        for a, b in ((stats.top, other.top), (stats.bottom, other.bottom)):
            assert torch.equal(a.ids, b.ids) and torch.equal(a.keys, b.keys) and torch.equal(a.acts, b.acts)
        assert torch.equal(stats.random.ids, other.random.ids) and torch.equal(stats.random.acts, other.random.acts)
        for side, buffer in stats.tails.items():
            assert torch.equal(buffer.sorted_keys(), other.tails[side].sorted_keys())
        assert torch.equal(stats.active, other.active) and torch.equal(stats.hist, other.hist)
        assert stats.n_tokens == other.n_tokens and stats.n_hist_tokens == other.n_hist_tokens
        assert stats.n_sample_tokens == other.n_sample_tokens
        assert torch.allclose(stats.total, other.total, rtol=1e-6, atol=1e-6)  # float sums: order-dependent bits
        assert torch.allclose(stats.total_sq, other.total_sq, rtol=1e-6, atol=1e-6)


def _batches(stream, size: int = 4):
    batch = []
    for seq in stream:
        batch.append(seq)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def test_rerun_of_a_complete_atlas_is_a_no_op(setup) -> None:
    model, corpus, atlas, _ = setup
    before = (atlas / "atlas.db").stat().st_mtime_ns
    again = scan(model, corpus, atlas, SETTINGS, progress=False)
    assert again.status == "complete" and again.neurons == 96
    assert (atlas / "atlas.db").stat().st_mtime_ns == before or again.seconds == 0.0


def test_mismatched_rerun_is_refused(setup, tmp_path) -> None:
    model, corpus, atlas, _ = setup
    meta = AtlasStore.open(atlas).meta()
    with pytest.raises(neurodbg.errors.AtlasMismatchError, match="settings"):
        scan(model, corpus, atlas, ScanSettings(seq_len=16, batch_size=4, top_k=7), progress=False)
    other = write_corpus(tmp_path / "other.jsonl", n_docs=20)
    with pytest.raises(neurodbg.errors.AtlasMismatchError, match="corpus"):
        scan(model, open_corpus(str(other)), atlas, SETTINGS, progress=False)
    assert AtlasStore.open(atlas).meta() == meta


def test_bad_atlases(tmp_path) -> None:
    with pytest.raises(neurodbg.errors.AtlasError, match="does not exist"):
        AtlasStore.open(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(neurodbg.errors.AtlasError, match="not an atlas"):
        AtlasStore.open(tmp_path / "plain")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "atlas.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(neurodbg.errors.AtlasError, match=r"corrupt|not an atlas"):
        AtlasStore.open(tmp_path / "junk")


def test_running_out_of_memory_is_one_clear_error_and_the_scan_resumes(tmp_path, default_model) -> None:
    """A model that really fails to allocate on its second layer (a hook asking for 4 PB):
    a typed error naming the batch size, and the atlas resumes once memory allows."""
    model = tiny_model(default_model.tokenizer)
    corpus = open_corpus(str(write_corpus(tmp_path / "corpus.jsonl")))
    handle = model.module.model.layers[1].register_forward_pre_hook(lambda *_: torch.empty(1 << 50))
    try:
        with pytest.raises(ScanMemoryError, match=r"batches of 4 sequences on cpu: .*smaller --batch-size"):
            scan(model, corpus, tmp_path / "atlas", SETTINGS, progress=False)
    finally:
        handle.remove()
    assert scan(model, corpus, tmp_path / "atlas", SETTINGS, progress=False).status == "complete"


def test_nan_activations_are_refused_with_the_neuron_named(tmp_path, default_model) -> None:
    """A NaN in one neuron's activations (a real one, written by a hook into down_proj's
    input) stops the scan with its id before any checkpoint or atlas row holds it."""
    model = tiny_model(default_model.tokenizer)
    corpus = open_corpus(str(write_corpus(tmp_path / "corpus.jsonl")))

    def poison(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        acts = args[0].clone()
        acts[0, 3, 7] = float("nan")
        return (acts,)

    handle = model.module.model.layers[1].mlp.down_proj.register_forward_pre_hook(poison)
    try:
        with pytest.raises(NonFiniteError, match=r"^L1/N7 \(layers.1.mlp.act\) had NaN"):
            scan(model, corpus, tmp_path / "atlas", SETTINGS, progress=False)
    finally:
        handle.remove()
    assert AtlasStore.open(tmp_path / "atlas").status != "complete"
    assert checkpoint.load(tmp_path / "atlas") is None


def test_layer_kernel_that_cannot_be_built_leaves_the_other_code(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """No compiler (or ninja): one warning, then None for the rest of the process, with
    nothing changed, so the caller runs the compiled or eager code."""
    from neurodbg.scan import layer_kernel
    from neurodbg.scan.tails import TailBuffer

    def no_compiler() -> None:
        raise RuntimeError("Error building extension 'neurodbg_layer_stats': c++: not found")

    monkeypatch.setattr(layer_kernel, "_module", None)
    monkeypatch.setattr(layer_kernel, "_broken", False)
    monkeypatch.setattr(layer_kernel, "load", no_compiler)
    acts = torch.ones(2, 8, 4)
    totals = [torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64),
              torch.zeros(4, dtype=torch.long)]
    tails = [TailBuffer(3, 4, +1)]
    for _ in range(2):
        assert layer_kernel.layer_stats(acts, 7, True, [torch.zeros(4)] * 2, tails, [1, 1], totals) is None
    assert layer_kernel._broken and caplog.text.count("C++ layer kernel is unavailable") == 1
    assert all(not t.any() for t in totals) and tails[0].fill.sum() == 0
