"""Fidelity: a trace without interventions is bit-identical to the plain model;
captures equal an independent recomputation; each intervention changes exactly
the coordinates it names. Every architecture family, plus the real default model."""

from __future__ import annotations

import pytest
import torch
from families import ARCHS, FAMILY_OF, logits_of, mlp_parts, tiny_model

import neurodbg
from neurodbg import Model

IDS = torch.tensor([[5, 17, 42, 9, 77, 3, 100, 64, 21, 8]])
ALL_SITES = ["embed", "layers.*.resid_in", "layers.*.attn.out", "layers.*.mlp.in", "layers.*.mlp.act",
             "layers.*.mlp.out", "layers.*.resid_out", "final_norm", "logits"]


@pytest.fixture(scope="module", params=ARCHS)
def arch(request: pytest.FixtureRequest) -> tuple[str, Model]:
    return request.param, neurodbg.wrap(tiny_model(request.param))


def _plain(model: Model, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return logits_of(model.module(ids))


def _present(model: Model) -> list[str]:
    return [s for s in ALL_SITES if any(n for n in model.sites if neurodbg.sites.patterns.matches(s, n))]


def test_family_detected(arch: tuple[str, Model]) -> None:
    name, model = arch
    assert model.family == FAMILY_OF[name]
    assert model.n_layers == 3
    assert {"layers.0.mlp.act", "layers.2.resid_out", "embed"} <= set(model.sites)


def test_untouched_trace_is_bit_identical(arch: tuple[str, Model]) -> None:
    _, model = arch
    plain = _plain(model)
    sites = _present(model)
    tr = model.run(IDS, capture=sites)
    assert torch.equal(logits_of(tr.output), plain)
    assert len(tr.captures) == len(model.resolve(sites))
    # and the hooks are gone afterwards
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.module.modules())


def test_mlp_act_equals_manual_recomputation(arch: tuple[str, Model]) -> None:
    name, model = arch
    mlp_module, recompute = mlp_parts(model.module, name, 1)
    seen: list[torch.Tensor] = []
    handle = mlp_module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        tr = model.run(IDS, capture=["layers.1.mlp.act", "layers.1.mlp.in"])
    finally:
        handle.remove()
    with torch.no_grad():
        expected = recompute(seen[0])
    assert torch.equal(tr["layers.1.mlp.in"], seen[0])
    assert torch.equal(tr["layers.1.mlp.act"], expected)


def test_ablation_touches_only_named_coordinates(arch: tuple[str, Model]) -> None:
    _, model = arch
    base = model.run(IDS, capture="layers.1.mlp.act")["layers.1.mlp.act"]
    iv = {"op": "ablate", "site": "layers.1.mlp.act", "neurons": [7], "tokens": [2, 5]}
    tr = model.run(IDS, capture="layers.1.mlp.act", interventions=[iv])
    edited = tr["layers.1.mlp.act"]
    changed = (edited != base).nonzero().tolist()
    assert changed == [[0, 2, 7], [0, 5, 7]] or set(map(tuple, changed)) <= {(0, 2, 7), (0, 5, 7)}
    assert edited[0, 2, 7] == 0 and edited[0, 5, 7] == 0
    mask = torch.ones_like(base, dtype=torch.bool)
    mask[0, [2, 5], 7] = False
    assert torch.equal(edited[mask], base[mask])
    assert not torch.equal(logits_of(tr.output), _plain(model))


def test_intervention_ops(arch: tuple[str, Model]) -> None:
    _, model = arch
    site = "layers.2.mlp.act"
    base = model.run(IDS, capture=site)[site]
    width = base.shape[-1]

    def edited(iv: dict) -> torch.Tensor:
        return model.run(IDS, capture=site, interventions=[iv])[site]

    out = edited({"op": "set", "site": site, "neurons": [1, 4], "value": [2.5, -1.0], "tokens": [0]})
    assert out[0, 0, 1] == 2.5 and out[0, 0, 4] == -1.0 and torch.equal(out[0, 1:], base[0, 1:])
    out = edited({"op": "scale", "site": site, "neurons": [3], "factor": 3.0})
    assert torch.equal(out[..., 3], base[..., 3] * 3.0)
    out = edited({"op": "add", "site": site, "neurons": [0], "value": 1.5, "tokens": [-1]})
    assert torch.equal(out[0, -1, 0], base[0, -1, 0] + 1.5) and torch.equal(out[0, :-1], base[0, :-1])
    vec = torch.linspace(-1, 1, width)
    out = edited({"op": "add_vector", "site": site, "vector": vec.tolist(), "scale": 0.5, "tokens": "all"})
    assert torch.allclose(out, base + 0.5 * vec)
    # setting a neuron to its own value changes nothing, bit for bit
    same = {"op": "set", "site": site, "neurons": [5], "tokens": [3], "value": float(base[0, 3, 5])}
    tr = model.run(IDS, capture=site, interventions=[same])
    assert torch.equal(tr[site], base) and torch.equal(logits_of(tr.output), _plain(model))


def test_patching_from_another_run(arch: tuple[str, Model]) -> None:
    _, model = arch
    other = IDS.flip(1)
    clean = model.run(other, capture="layers.1.resid_out")
    patched = model.run(IDS, capture="layers.1.resid_out", sources={"clean": clean.captures},
                        interventions=[{"op": "patch", "site": "layers.1.resid_out", "source": "clean"}])
    assert torch.equal(patched["layers.1.resid_out"], clean["layers.1.resid_out"])
    # a full patch of the residual stream at the last layer reproduces the other run's logits
    last = f"layers.{model.n_layers - 1}.resid_out"
    clean = model.run(other, capture=last)
    patched = model.run(IDS, sources={"clean": clean.captures},
                        interventions=[{"op": "patch", "site": last, "source": "clean"}])
    assert torch.equal(logits_of(patched.output), logits_of(clean.output))


def test_reducers_match_full_capture(arch: tuple[str, Model]) -> None:
    _, model = arch
    site = "layers.0.mlp.act"
    full = model.run(IDS, capture=site)[site]
    for reduce, expected in [("max", full.amax(1)), ("min", full.amin(1)), ("mean", full.mean(1)),
                             ("absmax", full.abs().amax(1)), ("last", full[:, -1])]:
        got = model.run(IDS, capture=site, reduce=reduce)[site]
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-6), reduce


def test_hooks_removed_when_the_run_raises(arch: tuple[str, Model]) -> None:
    _, model = arch
    bad = {"op": "ablate", "site": "layers.0.mlp.act", "neurons": [10_000]}
    with pytest.raises(neurodbg.NeuronIndexError, match="out of range"):
        model.run(IDS, interventions=[bad])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.module.modules())
    assert torch.equal(_plain(model), _plain(model))
