"""Router health in the training watcher: its figures equal a recomputation from the
routers' own outputs, a top-1 mixture of experts trained on real data without load
balancing collapses and is diagnosed (with the step it began), and the same model with
the seeds' α·CV² loss or the Switch auxiliary loss stays healthy with no finding."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_moe_anatomy import tiny_moe

import neurodbg
from neurodbg.errors import RunError
from neurodbg.train.digits import digits_data, train
from neurodbg.train.digits_moe import balancing_loss, digits_moe
from neurodbg.train.moe_losses import cv2_loss, switch_loss
from neurodbg.train.run_store import RunStore
from neurodbg.train.runs import findings, read


def olmoe_steps(run: Path | None, steps: int = 3) -> tuple[list[float], list[list[tuple]]]:
    """A tiny OLMoE (8 experts, top-2) trained a few steps, watched into `run` when given: its losses
    and, per step, each layer's router outputs seen by plain hooks."""
    model, _, _ = tiny_moe("olmoe")
    model.train()
    seen: list[list[tuple]] = []
    for layer in model.model.layers:
        layer.mlp.gate.register_forward_hook(lambda _m, _a, out: seen[-1].append(tuple(t.detach() for t in out)))
    opt = torch.optim.AdamW(model.parameters(), 1e-2)
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    watcher = neurodbg.watch(model, opt, run=run, flush_every=1) if run is not None else None
    losses = []
    if watcher is not None:
        watcher.__enter__()
    for _ in range(steps):
        seen.append([])
        loss = model(input_ids=ids, labels=ids).loss
        if watcher is not None:
            watcher.log(loss=loss)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    if watcher is not None:
        watcher.__exit__(None, None, None)
    return losses, seen


def test_router_figures_equal_a_recomputation_and_change_nothing(tmp_path: Path) -> None:
    losses, seen = olmoe_steps(tmp_path / "run")
    plain, _ = olmoe_steps(None)
    assert losses == plain                                       # bit-identical training
    records = read(tmp_path / "run")
    assert list(records.routers) == ["layers.0.router", "layers.1.router"]
    assert records.meta["moe_blocks"] == ["model.layers.0.mlp", "model.layers.1.mlp"]
    for i, name in enumerate(records.routers):
        router = records.routers[name]
        assert (router.experts, router.top_k, router.steps) == (8, 2, [0, 1, 2])
        for step in range(3):
            logits, _, chosen = seen[step][i]
            probs = torch.softmax(logits.double(), -1)
            assert router.tokens[step] == 64
            assert router.counts[step] == torch.bincount(chosen.flatten(), minlength=8).double().tolist()
            assert router.probs[step] == pytest.approx(probs.sum(0).tolist(), rel=1e-5)
            assert router.entropy[step] == pytest.approx(float(-(probs * probs.log()).sum()), rel=1e-5)


def test_routers_named_by_hand_and_bad_specs(tmp_path: Path) -> None:
    net = digits_moe()
    with pytest.raises(RunError, match=r"no module 'moe\.gate'"):
        neurodbg.watch(net, run=tmp_path / "a", routers=["moe.gate"])
    with pytest.raises(RunError, match="give its top_k"):
        neurodbg.watch(net, run=tmp_path / "b", routers=["moe.router.proj"])
    # a plain linear router named by hand: its choices are its top-k logits
    data = digits_data()
    train(net, torch.optim.Adam(net.parameters(), 3e-3), data, steps=3, run=tmp_path / "c",
          watch_options={"routers": {"moe.router.proj": 1}})
    router = read(tmp_path / "c").routers["moe.router.proj"]
    assert router.steps == [0, 1, 2] and all(sum(c) == 64 for c in router.counts)
    train(digits_moe(), torch.optim.Adam(net.parameters(), 3e-3), data, steps=2, run=tmp_path / "d",
          watch_options={"routers": {}})
    assert read(tmp_path / "d").routers == {}                      # routers={} watches none


def test_balancing_losses_by_hand() -> None:
    logits = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(logits, -1)
    importance = probs.sum(0)
    assert float(cv2_loss(logits)) == pytest.approx(float(importance.var(unbiased=False) / importance.mean() ** 2))
    chosen = probs.argmax(-1, keepdim=True)
    shares = torch.bincount(chosen.flatten(), minlength=8).float() / 32
    assert float(switch_loss(logits, chosen)) == pytest.approx(float(8 * (shares * probs.mean(0)).sum()))
    assert float(cv2_loss(torch.zeros(4, 8))) == 0.0
    assert float(switch_loss(torch.zeros(8, 8), torch.arange(8)[:, None])) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def moe_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits MoE (8 experts, top-1, seed 0) trained without balancing, with α·CV² and with the
    Switch loss (α = 0.01): the README's walkthrough."""
    root = tmp_path_factory.mktemp("moe-runs")
    data = digits_data()
    runs = {}
    for balancing, steps in (("none", 600), ("cv2", 2000), ("switch", 2000)):
        net = digits_moe(seed=0)
        train(net, torch.optim.Adam(net.parameters(), 3e-3), data, steps=steps, run=root / balancing,
              extra_loss=lambda net=net, b=balancing: balancing_loss(net, b, 0.01))
        runs[balancing] = root / balancing
    return runs


def test_collapse_is_diagnosed_with_the_step_it_began(moe_runs: dict[str, Path]) -> None:
    found = {f.kind: f for f in findings(moe_runs["none"])}
    assert set(found) == {"expert_collapse", "idle_experts"}, [f.message for f in found.values()]
    collapse = found["expert_collapse"]
    router = read(moe_runs["none"]).routers["moe.router"]
    top = collapse.evidence["expert"]
    assert collapse.where == ["moe.router"] and collapse.evidence["share"] > 0.8
    # from the step it names on, the expert holds over 80 % of the tokens, pooled 5 records at a time;
    # just before, it did not
    i = router.steps.index(collapse.step)
    assert all(router.shares(j, j + 5)[top] > 0.8 for j in range(i, len(router.counts) - 5))
    assert router.shares(i - 5, i)[top] <= 0.8 and 10 <= collapse.step <= 200
    idle = found["idle_experts"]
    assert top not in idle.evidence["idle"] and len(idle.evidence["idle"]) >= 5
    assert "load-balancing loss" in collapse.advice


@pytest.mark.parametrize("balancing", ["cv2", "switch"])
def test_a_balanced_moe_stays_healthy_with_no_finding(moe_runs: dict[str, Path], balancing: str) -> None:
    # the routers are healthy; 2,000 steps on 1,437 digits may also end mildly overfitted (the validation
    # loss ~20 % above its best on some CPUs, whose rounding decides it), and nothing else may show
    found = findings(moe_runs[balancing])
    assert {f.kind for f in found} <= {"overfitting"}, [f.message for f in found]
    router = read(moe_runs[balancing]).routers["moe.router"]
    shares = router.shares(len(router.counts) - 200)
    assert max(shares) < 0.3 and min(shares) > 0.01


def test_cli_diagnoses_the_collapse(moe_runs: dict[str, Path]) -> None:
    command = str(Path(sys.executable).with_name("neurodbg"))
    done = subprocess.run([command, "runs", "diagnose", str(moe_runs["none"]), "--json"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [f["kind"] for f in out] == ["expert_collapse", "idle_experts"]
    assert all(f["where"] == ["moe.router"] and f["step"] >= 0 and f["advice"] for f in out)


def test_a_schema_1_run_still_reads_and_is_upgraded_when_written(moe_runs: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.db").write_bytes((moe_runs["none"] / "run.db").read_bytes())
    with sqlite3.connect(old / "run.db") as conn:
        conn.execute("DROP TABLE routers")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    assert read(old).routers == {} and len(read(old).recorded_steps) == 600
    with RunStore.open(old, create=True) as store:
        assert store.get("schema_version") == "2" and store.routers() == []
