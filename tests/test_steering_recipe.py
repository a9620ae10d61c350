"""Steering as the seeds describe it, on the real default model and a real described atlas:
a neuron is clamped only on the side of the polarity selected (the other side keeps its exact
values), the seeds' recipe, several specs in one run (a contradiction refused), and the share
of all neurons a run touches — from Python, the CLI and HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

import neurodbg
from neurodbg.analyze.atlas_view import AtlasView
from neurodbg.analyze.monitor import Monitor
from neurodbg.analyze.prompt import prepare
from neurodbg.analyze.steering import SteeringSpec, resolve, seeds_spec, steer
from neurodbg.atlas import AtlasStore
from neurodbg.errors import InterventionError, NeurodbgError
from neurodbg.trace.interventions import Clamp, SetValue, dumps, loads

PROMPT = "Which is bigger, 9.11 or 9.9?"
COMMAND = str(Path(sys.executable).with_name("neurodbg"))


@pytest.fixture(scope="module")
def view(default_model: neurodbg.Model, described_atlas: Path) -> AtlasView:
    return AtlasView(AtlasStore.open(described_atlas), default_model)


def test_a_clamp_changes_only_its_side(default_model: neurodbg.Model) -> None:
    p = prepare(default_model, PROMPT)
    site, cols = "layers.1.mlp.act", [5, 77, 900]
    with torch.no_grad(), default_model.trace(capture=site) as tr:
        tr.forward({"input_ids": p.ids})
    plain = tr[site]
    for side in ("positive", "negative"):
        edit = Clamp(site=site, neurons=cols, value=[1.5, -2.0, 0.25], side=side)
        with torch.no_grad(), default_model.trace(capture=site, interventions=[edit]) as tr:
            tr.forward({"input_ids": p.ids})
        got = tr[site]
        picked = plain[..., cols]
        on_side = picked > 0 if side == "positive" else picked < 0
        expected = torch.where(on_side, torch.tensor([1.5, -2.0, 0.25]), picked)
        assert torch.equal(got[..., cols], expected)
        others = [c for c in range(plain.shape[-1]) if c not in cols]
        assert torch.equal(got[..., others], plain[..., others])
        assert on_side.any() and (~on_side).any()          # both sides occur at these neurons
    assert loads(dumps([edit]))[0] == edit


def test_specs_resolve_by_side_and_run_together(view: AtlasView, default_model: neurodbg.Model) -> None:
    suppress = SteeringSpec(neurons=["L0/N3+", "L0/N900-", "L1/N42+"], value=0.0)
    boost = SteeringSpec(neurons=["L1/N7+", "L1/N8+"], value=0.5)
    edits = resolve([suppress, boost], view, default_model)
    assert [(type(e).__name__, e.site, e.side, e.neurons) for e in edits] == [
        ("Clamp", "layers.0.mlp.act", "positive", [3]), ("Clamp", "layers.0.mlp.act", "negative", [900]),
        ("Clamp", "layers.1.mlp.act", "positive", [42]), ("Clamp", "layers.1.mlp.act", "positive", [7, 8])]
    q = view.quantile(1e-4, "+")
    assert edits[3].value == pytest.approx([0.5 * q[1, 7], 0.5 * q[1, 8]])
    both = resolve(SteeringSpec(neurons=["L0/N3"], value=0.0, sides="both"), view, default_model)
    assert isinstance(both[0], SetValue) and both[0].neurons == [3]
    # the same value twice is no contradiction; a different value on the same side is
    resolve([suppress, SteeringSpec(neurons=["L0/N3+"], value=0.0)], view, default_model)
    resolve([suppress, SteeringSpec(neurons=["L0/N3-"], value=1.0)], view, default_model)   # the other side
    with pytest.raises(InterventionError, match="steering specs 1 and 2 contradict each other on L0/N3"):
        resolve([suppress, SteeringSpec(neurons=["L0/N3+"], value=1.0)], view, default_model)
    with pytest.raises(InterventionError, match="contradict"):
        resolve([suppress, SteeringSpec(neurons=["L0/N3-"], value=1.0, sides="both")], view, default_model)


def test_the_seeds_recipe_and_the_share_touched(view: AtlasView, default_model: neurodbg.Model) -> None:
    spec = seeds_spec("boost", neurons=["L1/N42+"])
    assert (spec.value, spec.level, spec.tokens, spec.sides) == (0.5, 1e-5, "prompt", "selected")
    assert seeds_spec("suppress", query="digits").value == 0.0
    with pytest.raises(NeurodbgError, match="suppress or boost"):
        seeds_spec("amplify", neurons=["L1/N42"])      # type: ignore[arg-type]
    edits = resolve(SteeringSpec(neurons=["L0/N3+", "L0/N3-", "L1/N42"], value=0.0), view, default_model)
    result = steer(default_model, prepare(default_model, PROMPT), edits, max_new_tokens=2)
    out = result.to_dict()
    assert out["neurons"] == 2 and out["total_neurons"] == 30 * 1536
    assert out["share"] == pytest.approx(2 / 46080, rel=1e-4) and out["share"] < 0.002


def test_cli_runs_several_specs(described_atlas: Path, tmp_path: Path) -> None:
    (tmp_path / "suppress.json").write_text(json.dumps({"neurons": ["L0/N3+", "L1/N42+"], "value": 0}))
    (tmp_path / "boost.json").write_text(json.dumps([{"neurons": ["L1/N7+"], "value": 0.5}]))
    done = subprocess.run([COMMAND, "steer", PROMPT, "--atlas", str(described_atlas), "--spec",
                           str(tmp_path / "suppress.json"), "--spec", str(tmp_path / "boost.json"), "--neurons",
                           "L0/N5", "--max-new-tokens", "2", "--save", str(tmp_path / "run.json"), "--json"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["neurons"] == 4 and out["share"] == pytest.approx(4 / 46080, rel=1e-4)
    saved = loads((tmp_path / "run.json").read_text())
    assert {e.op for e in saved} == {"clamp"} and sum(len(e.neurons or []) for e in saved) == 4
    (tmp_path / "clash.json").write_text(json.dumps({"neurons": ["L0/N3+"], "value": 2}))
    clash = subprocess.run([COMMAND, "steer", PROMPT, "--atlas", str(described_atlas), "--spec",
                            str(tmp_path / "suppress.json"), "--spec", str(tmp_path / "clash.json")],
                           capture_output=True, text=True, timeout=600, check=False)
    assert clash.returncode == 2 and "contradict" in clash.stderr and len(clash.stderr.strip().splitlines()) == 1


def test_http_runs_several_specs(served: str, default_model: neurodbg.Model, described_atlas: Path) -> None:
    specs = [{"neurons": ["L0/N3+", "L1/N42+"], "value": 0}, {"neurons": ["L1/N7+"], "value": 0.5}]
    preview = httpx.post(f"{served}/api/steer/preview", json={"spec": specs}, timeout=120).json()
    assert [n["spec"] for n in preview["neurons"]] == [1, 1, 2]
    response = httpx.post(f"{served}/api/steer", json={"input": {"text": PROMPT}, "spec": specs,
                                                      "max_new_tokens": 3}, timeout=300)
    result = [json.loads(line) for line in response.text.splitlines() if line.strip()][-1]
    assert result["type"] == "result" and result["neurons"] == 3
    monitor = Monitor(default_model, described_atlas)
    direct = monitor.steer(PROMPT, monitor.steering([SteeringSpec(**s) for s in specs]), max_new_tokens=3)
    assert result["steered"] == direct.to_dict()["steered"] and result["share"] == direct.to_dict()["share"]
    clash = httpx.post(f"{served}/api/steer", json={"input": {"text": PROMPT}, "max_new_tokens": 1,
                                                   "spec": [specs[0], {"neurons": ["L0/N3+"], "value": 1}]})
    assert clash.status_code == 400 and "contradict" in clash.json()["detail"]
