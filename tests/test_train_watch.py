"""The training debugger on real training with real data (scikit-learn's digits):
watching changes nothing, the records agree with figures computed by hand, induced
pathologies are each found and a healthy run has no finding, breakpoints stop at the
first bad step and name the module, and `replay` runs that step again exactly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import neurodbg
from neurodbg.errors import RunError, UnknownSiteError
from neurodbg.train.digits import batches, digits_data, mlp, train
from neurodbg.train.run_store import RunStore
from neurodbg.train.runs import findings, read


@pytest.fixture(scope="module")
def data():
    return digits_data()


def kinds(run: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in findings(run):
        out.setdefault(f.kind, []).extend(f.where)
    return out


# -- fidelity ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{"every": 1}, {"every": 3, "break_on": ["nonfinite", "grad_norm>1e9"]}],
                         ids=["every-step", "breakpoints"])
def test_watching_changes_nothing(data, tmp_path: Path, options: dict) -> None:
    """The same seeded steps, watched (every site, every step) and not: bit-identical losses and weights."""
    def run(watched: bool) -> tuple[list[float], list[torch.Tensor]]:
        net = mlp([64, 128, 64, 10], seed=3)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        result = train(net, opt, data, steps=40, val_every=10, run=tmp_path / "run" if watched else None,
                       every=options["every"], watch_options={k: v for k, v in options.items() if k != "every"})
        return result.losses, [p.detach().clone() for p in net.parameters()]

    plain, watched = run(False), run(True)
    assert plain[0] == watched[0]
    assert all(torch.equal(a, b) for a, b in zip(plain[1], watched[1], strict=True))


@pytest.fixture(params=["kernel", "general"])
def watch_path(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the watcher computes its figures on a CPU: the C++ kernel's recorder (built here if
    this machine lacks it; set-up builds it) and the general path (NumPy and torch)."""
    from neurodbg.train import watch_kernel

    if request.param == "kernel":
        watch_kernel.KERNEL.load()
        monkeypatch.delenv(watch_kernel.DISABLE_ENV, raising=False)
    else:
        monkeypatch.setenv(watch_kernel.DISABLE_ENV, "1")
    return request.param


def test_records_equal_figures_computed_by_hand(data, tmp_path: Path, watch_path: str) -> None:
    """Gradient norms, weight norms and update ratios of each parameter tensor, and each site's mean,
    std and dead share, against the same steps run by hand with plain hooks (both paths)."""
    torch.manual_seed(0)
    net = mlp([64, 32, 16, 10], seed=1)
    opt = torch.optim.SGD(net.parameters(), 0.1, momentum=0.9)
    outputs: dict[str, torch.Tensor] = {}
    for name in ("1", "3", "4"):
        getattr(net, name).register_forward_hook(
            lambda _m, _a, out, name=name: outputs.__setitem__(name, out.detach().clone()))
    expected: list[dict] = []
    stream = batches(data, 64, 0)
    with neurodbg.watch(net, opt, run=tmp_path / "run", weights_every=1, flush_every=1, dead_window=3) as w:
        assert w._lean == (watch_path == "kernel")
        for _, (x, y) in zip(range(6), stream, strict=False):
            loss = F.cross_entropy(net(x), y)
            w.log(loss=loss)
            opt.zero_grad()
            loss.backward()
            before = {n: p.detach().clone() for n, p in net.named_parameters()}
            grads = {n: float(p.grad.double().norm()) for n, p in net.named_parameters()}
            opt.step()
            expected.append({"loss": float(loss.detach()), "grads": grads,
                             "weights": {n: float(v.double().norm()) for n, v in before.items()},
                             "ratios": {n: float((p.detach() - before[n]).double().norm() / before[n].double().norm())
                                        for n, p in net.named_parameters()},
                             "sites": {f"{k}:output": v for k, v in outputs.items()}})
    records = read(tmp_path / "run")
    assert records.recorded_steps == list(range(6))
    assert [v for _, v in records.series("loss")] == [e["loss"] for e in expected]
    for step, e in enumerate(expected):
        for name, p in records.params.items():
            assert p.grad_norm[step] == pytest.approx(e["grads"][name], rel=1e-5)
            assert p.weight_norm[step] == pytest.approx(e["weights"][name], rel=1e-5)
            assert p.update_ratio[step] == pytest.approx(e["ratios"][name], rel=1e-3)
        assert records.series("grad_norm")[step][1] == pytest.approx(math.sqrt(sum(g * g for g in e["grads"].values())),
                                                                     rel=1e-5)
        for name, value in e["sites"].items():
            site = records.sites[name]
            x = value.double()
            assert site.mean[step] == pytest.approx(float(x.mean()), rel=1e-4, abs=1e-6)
            assert site.std[step] == pytest.approx(float(x.std(unbiased=False)), rel=1e-3)
            if name != "4:output":       # ReLU outputs: dead = never positive in the last 3 recorded steps
                window = torch.cat([expected[s]["sites"][name] for s in range(max(0, step - 2), step + 1)])
                assert site.dead[step] == pytest.approx(float((window.amax(0) <= 0).double().mean()))
            else:
                assert site.dead[step] is None              # logits: "dead" means nothing there
    assert list(records.sites) == ["1:output", "3:output", "4:output"]      # forward order


# -- pathologies ------------------------------------------------------------------------------------
def test_a_healthy_run_has_no_finding(data, tmp_path: Path) -> None:
    net = mlp([64, 128, 64, 10])
    result = train(net, torch.optim.Adam(net.parameters(), 1e-3), data, steps=500, run=tmp_path / "run")
    assert result.val_acc >= 0.95
    assert findings(tmp_path / "run") == []


def test_a_deep_sigmoid_network_has_vanishing_gradients(data, tmp_path: Path) -> None:
    net = mlp([64] + [64] * 8 + [10], "sigmoid")
    train(net, torch.optim.SGD(net.parameters(), 0.1), data, steps=200, run=tmp_path / "run", every=2)
    found = kinds(tmp_path / "run")
    assert "vanishing_gradients" in found
    assert found["vanishing_gradients"][:2] == ["0", "2"]          # the first layers
    assert "lr_too_low" not in found


def test_a_dead_relu_layer_is_found(data, tmp_path: Path) -> None:
    net = mlp([64, 128, 64, 10])
    with torch.no_grad():
        net[0].bias.fill_(-5.0)             # a large negative bias: the first ReLU never fires
    train(net, torch.optim.Adam(net.parameters(), 1e-3), data, steps=120, run=tmp_path / "run")
    dead = [f for f in findings(tmp_path / "run") if f.kind == "dead_units"]
    assert dead and dead[0].where == ["1:output"] and dead[0].evidence["dead_share"] > 0.9


def test_saturated_tanh_layers_are_found(data, tmp_path: Path) -> None:
    net = mlp([64, 128, 64, 10], "tanh")
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(8.0)                 # far too large initial weights: tanh pinned at ±1
    train(net, torch.optim.SGD(net.parameters(), 0.01), data, steps=100, run=tmp_path / "run")
    sat = [f for f in findings(tmp_path / "run") if f.kind == "saturation"]
    assert sat and sat[0].where == ["3:output"] and sat[0].evidence["saturated_share"] > 0.5


def test_a_small_training_set_overfits(tmp_path: Path) -> None:
    few = digits_data(train_samples=50)
    net = mlp([64, 512, 512, 10])
    train(net, torch.optim.Adam(net.parameters(), 1e-3), few, steps=200, batch_size=50, val_every=10,
          run=tmp_path / "run", every=5)
    over = [f for f in findings(tmp_path / "run") if f.kind == "overfitting"]
    assert over and over[0].evidence["last_val_loss"] > over[0].evidence["best_val_loss"]


def test_a_learning_rate_far_too_low_or_high(data, tmp_path: Path) -> None:
    net = mlp([64, 128, 64, 10])
    train(net, torch.optim.SGD(net.parameters(), 1e-5), data, steps=120, run=tmp_path / "low")
    assert {"lr_too_low", "underfitting"} <= set(kinds(tmp_path / "low"))
    net = mlp([64, 128, 64, 10])
    train(net, torch.optim.SGD(net.parameters(), 50.0), data, steps=60, run=tmp_path / "high")
    assert {"lr_too_high", "exploding_gradients"} <= set(kinds(tmp_path / "high"))


# -- breakpoints and replay ----------------------------------------------------------------------------
def test_divergence_stops_at_the_first_bad_step_and_replays(data, tmp_path: Path) -> None:
    """SGD at a learning rate far too high: non-finite within 50 steps; the breakpoint names the first
    module whose output went bad, saves the step, and replay computes the same step again."""
    net = mlp([64, 128, 64, 10], "gelu")
    with pytest.raises(neurodbg.BreakpointHit) as caught:
        train(net, torch.optim.SGD(net.parameters(), 1000.0), data, steps=50, run=tmp_path / "run",
              watch_options={"break_on": ["nonfinite"]})
    hit = caught.value.hit
    assert hit.step < 50 and hit.reason.startswith("nonfinite") and hit.module == "3:output"
    assert f"step {hit.step}" in str(caught.value) and "3:output" in str(caught.value)
    records = read(tmp_path / "run")
    assert records.meta["status"] == "broken" and records.breaks[0]["step"] == hit.step
    assert records.steps_seen == hit.step + 1               # nothing recorded after the step it stopped at
    replayed = neurodbg.replay(tmp_path / "run", hit.step, mlp([64, 128, 64, 10], "gelu", seed=9),
                               loss_fn=lambda out, batch: F.cross_entropy(out, batch["extra"][1]))
    assert replayed.first_nonfinite == hit.module
    assert list(replayed.captures)[:2] == ["1:output", "3:output"]
    # the step's own forward pass: its logits give the loss the run logged (NaN here) and the ones before
    logged = records.series("loss")[hit.step][1]
    assert logged is None and replayed.loss is not None and not math.isfinite(float(replayed.loss.detach()))
    kinds_found = {f.kind for f in findings(tmp_path / "run")}
    assert "nonfinite" in kinds_found


def test_threshold_breakpoints_stop_before_the_update(data, tmp_path: Path) -> None:
    """grad_norm>X and loss>X stop at the first step where they hold, with the weights of before it."""
    reference = mlp([64, 64, 10], seed=2)
    opt = torch.optim.SGD(reference.parameters(), 3.0)
    grad_norms, weights, stream = [], [], batches(data, 64, 0)
    for _, (x, y) in zip(range(30), stream, strict=False):
        loss = F.cross_entropy(reference(x), y)
        opt.zero_grad()
        loss.backward()
        grad_norms.append(math.sqrt(sum(float(p.grad.double().norm()) ** 2 for p in reference.parameters())))
        weights.append({k: v.clone() for k, v in reference.state_dict().items()})
        opt.step()
    threshold = sorted(grad_norms)[len(grad_norms) // 2]
    first = next(i for i, g in enumerate(grad_norms) if g > threshold)
    net = mlp([64, 64, 10], seed=2)
    with pytest.raises(neurodbg.BreakpointHit) as caught:
        train(net, torch.optim.SGD(net.parameters(), 3.0), data, steps=30, run=tmp_path / "run", every=7,
              watch_options={"break_on": [f"grad_norm>{threshold!r}"]})
    assert caught.value.hit.step == first and caught.value.hit.reason == "grad_norm"
    saved = torch.load(tmp_path / "run" / "breaks" / f"step-{first:06d}" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], weights[first][k]) for k in saved)
    assert all(torch.equal(p, weights[first][k]) for k, p in net.state_dict().items())    # no update applied


def test_bad_watch_setups_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no trainable parameters"):
        neurodbg.watch(nn.Sequential(nn.ReLU(), nn.Sigmoid()), run=tmp_path / "a")
    with pytest.raises(UnknownSiteError):
        neurodbg.watch(mlp([4, 4, 2]), run=tmp_path / "b", sites=["nope:output"])
    with pytest.raises(RunError, match="unknown breakpoint"):
        neurodbg.watch(mlp([4, 4, 2]), run=tmp_path / "c", break_on=["loss>nan"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file"):
        neurodbg.watch(mlp([4, 4, 2]), run=tmp_path / "file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("someone else's")
    with pytest.raises(RunError, match="not a neurodbg run"):
        neurodbg.watch(mlp([4, 4, 2]), run=tmp_path / "other")
    (tmp_path / "foreign").mkdir()
    import sqlite3

    sqlite3.connect(tmp_path / "foreign" / "run.db").executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    with pytest.raises(RunError, match="another program"):
        RunStore.open(tmp_path / "foreign")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "run.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)
    with pytest.raises(RunError, match=r"corrupt|not a run"):
        RunStore.open(tmp_path / "corrupt")
    net = mlp([4, 4, 2])
    with neurodbg.watch(net, run=tmp_path / "used") as w:
        net(torch.zeros(1, 4)).sum().backward()
        w.step_done()
    with pytest.raises(RunError, match="already holds 1 steps"):
        neurodbg.watch(net, run=tmp_path / "used")
    assert np.isfinite(read(tmp_path / "used").series("grad_norm")[0][1])
    whole = (tmp_path / "used" / "run.db").read_bytes()
    (tmp_path / "truncated").mkdir()
    (tmp_path / "truncated" / "run.db").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(RunError, match=r"corrupt|malformed|not a run"):
        read(tmp_path / "truncated")


@pytest.mark.parametrize("kind", ["rectifier", "sigmoid", "other"])
def test_the_device_path_equals_the_numpy_path(kind: str) -> None:
    """Off the CPU the site figures are torch operations read at the step's end; on a CPU, NumPy. Both
    give the same figures for the same values (two forward calls in one step, as with accumulation)."""
    from neurodbg.train.site_stats import StepSums, _units_last, read_step

    g = torch.Generator().manual_seed(0)
    calls = [torch.relu(torch.randn(32, 16, generator=g)) if kind == "rectifier" else
             torch.sigmoid(4 * torch.randn(32, 16, generator=g)) for _ in range(2)]
    calls[1][:, 3] = 0.0 if kind == "rectifier" else calls[1][:, 3]
    on_cpu, on_device = StepSums(kind, nonnegative=kind == "rectifier"), StepSums(kind)   # type: ignore[arg-type]
    for x in calls:
        on_cpu.add(x)
        t = _units_last(x)
        on_device.values.append(t)
        on_device.count += t.numel()
        on_device._units = int(t.shape[-1])
        on_device._add_torch(t)
    a, b = read_step([on_cpu])[0], read_step([on_device])[0]
    assert a[2:4] == b[2:4] and (a[4] == b[4])
    assert a[0] == pytest.approx(b[0], rel=1e-5) and a[1] == pytest.approx(b[1], rel=1e-5)


class _SometimesUnused(nn.Module):
    """A small CNN (tanh and sigmoid feature maps) whose extra head runs only when asked: on the other
    steps one parameter has no gradient and the kernel's recorder hands the step to the general path."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(1, 4, 3), nn.Tanh()
        self.conv2, self.act2 = nn.Conv2d(4, 6, 3), nn.Sigmoid()
        self.head, self.extra = nn.Linear(6 * 4 * 4, 10), nn.Linear(6 * 4 * 4, 10)
        self.use_extra = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.conv2(self.act1(self.conv1(x.view(-1, 1, 8, 8))))).flatten(1)
        return self.head(h) + self.extra(h) if self.use_extra else self.head(h)


def test_the_kernel_path_records_what_the_general_path_records(data, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A CNN with tanh and sigmoid feature maps (channels as units), two parameter groups and a layer
    used on some steps only: the kernel's records (recorder steps and general-path steps in one run)
    equal the NumPy path's, and training is the same."""
    from neurodbg.train import watch_kernel

    watch_kernel.KERNEL.load()
    with torch.no_grad():       # oneDNN's first convolution of a shape in a process may round otherwise
        _SometimesUnused()(data.x_val[:32])

    def run(kernel: bool) -> tuple[list[float], object]:
        monkeypatch.setenv(watch_kernel.DISABLE_ENV, "0" if kernel else "1")
        net = _SometimesUnused()
        torch.manual_seed(0)
        for p in net.parameters():
            nn.init.normal_(p, std=0.5)
        opt = torch.optim.SGD([{"params": list(net.conv1.parameters()) + list(net.conv2.parameters())},
                               {"params": list(net.head.parameters()) + list(net.extra.parameters()), "lr": 0.05}],
                              lr=0.1, momentum=0.9)
        losses = []
        directory = tmp_path / ("kernel" if kernel else "general")
        with neurodbg.watch(net, opt, run=directory, weights_every=2, flush_every=3) as w:
            assert w._lean == kernel
            for step, (x, y) in zip(range(12), batches(data, 32, 0), strict=False):
                net.use_extra = step % 3 == 1
                loss = F.cross_entropy(net(x), y)
                w.log(loss=loss)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        return losses, read(directory)

    (kernel_losses, k), (general_losses, g) = run(True), run(False)
    assert kernel_losses == general_losses
    assert k.recorded_steps == g.recorded_steps == list(range(12))
    # the default sites: both activations and the last module with weights (reached on some steps only)
    assert list(k.params) == list(g.params) and list(k.sites) == list(g.sites) == \
        ["act1:output", "act2:output", "extra:output"]
    for name, kp in k.params.items():
        gp = g.params[name]
        assert kp.steps == gp.steps
        assert kp.grad_norm == pytest.approx(gp.grad_norm, rel=1e-5)
        assert kp.weight_norm == pytest.approx(gp.weight_norm, rel=1e-5)
        assert kp.update_ratio == pytest.approx(gp.update_ratio, rel=1e-4)
    assert k.params["extra.weight"].steps == k.sites["extra:output"].steps == [1, 4, 7, 10]   # those steps only
    for name, ks in k.sites.items():
        gs = g.sites[name]
        assert ks.steps == gs.steps
        assert ks.units == gs.units == {"act1:output": 4, "act2:output": 6, "extra:output": 10}[name]
        assert ks.mean == pytest.approx(gs.mean, rel=1e-4, abs=1e-6)
        assert ks.std == pytest.approx(gs.std, rel=1e-4)
        assert ks.saturated == gs.saturated and ks.dead == gs.dead == [None] * len(ks.steps)
    assert any(v and v > 0 for v in k.sites["act2:output"].saturated)        # saturation was counted
    for key in ("grad_norm", "lr/0", "lr/1"):
        assert [v for _, v in k.series(key)] == pytest.approx([v for _, v in g.series(key)], rel=1e-6)


@pytest.mark.parametrize("kind", ["rectifier", "sigmoid", "tanh", "other"])
def test_the_kernel_sites_equal_the_numpy_path(kind: str) -> None:
    """The kernel's site figures against `site_stats` on the same values: a 2-D output, a conv output
    (channels are the units), two calls in one step, and a float64 transposed (non-contiguous) tensor
    converted on the way; then the "fired within the window" count over three steps."""
    from neurodbg.train import watch_kernel
    from neurodbg.train.site_stats import StepSums, read_step

    sites = watch_kernel.KernelSites(watch_kernel.KERNEL.load(), {"flat": kind, "conv": kind}, [], [], 0)
    g = torch.Generator().manual_seed(1)

    def values(*shape: int) -> torch.Tensor:
        x = torch.randn(*shape, generator=g) * 3
        return torch.relu(x) if kind == "rectifier" else torch.sigmoid(x) if kind == "sigmoid" else \
            torch.tanh(x) if kind == "tanh" else x

    for now in range(3):
        calls = {"flat": [values(16, 12), values(12, 16).double().t()], "conv": [values(4, 5, 3, 3)]}
        calls["flat"][0][:, 2 + now] = 0.0
        calls["flat"][1][:, 2 + now] = 0.0
        if kind == "rectifier":
            calls["conv"][0][:, 1 + now] = 0.0
        numpy_path = {}
        for name, xs in calls.items():
            one = StepSums(kind, nonnegative=kind == "rectifier")      # type: ignore[arg-type]
            for x in xs:
                one.add(x.float().contiguous())
                sites.add(name, x)
            numpy_path[name] = read_step([one])[0]
        sites.end_sites(now, window=2)
        assert sites.ended is not None
        for name, kind_, (total, squares, count, fired, saturated), bad, units in sites.ended.figures():
            expected = numpy_path[name]
            assert (kind_, units, bad, count) == (kind, {"flat": 12, "conv": 5}[name], 0, expected[2])
            assert total == pytest.approx(expected[0], rel=1e-5) and squares == pytest.approx(expected[1], rel=1e-5)
            assert saturated == expected[4]
            if kind == "rectifier":      # a unit silent this step but not the one before still counts as fired
                assert fired == (expected[3] if now == 0 else {"flat": 12, "conv": 5}[name])
                assert expected[3] == {"flat": 11, "conv": 4}[name]
            else:
                assert fired == 0
        sites.discard()
