"""Each routed expert's neurons (`layers.{i}.experts.{e}.act`) inside transformers 5's fused
experts, for every MoE family: the captures equal the experts computed by hand from their
fused weights, add up to the layer's output, leave a traced run bit-identical, and edits
equal the same change made to the weights themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_moe_anatomy import tiny_moe
from torch.nn import functional as F

import neurodbg
from neurodbg.errors import NeuronIndexError

FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]
IDS = torch.tensor([[3, 17, 42, 9, 88, 5, 61, 20], [7, 7, 101, 64, 2, 33, 90, 11]])


def seen_by_hand(model: torch.nn.Module, layer: int) -> tuple[tuple, torch.Tensor]:
    """The experts module's inputs and output in a plain forward, from a plain hook."""
    got: list = []
    experts = model.model.layers[layer].mlp.experts
    handle = experts.register_forward_hook(lambda _m, args, out: got.append((args, out)))
    with torch.no_grad():
        model(IDS)
    handle.remove()
    return got[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_neurons_equal_the_experts_by_hand(family: str) -> None:
    model, experts, _ = tiny_moe(family)
    wrapped = neurodbg.Model(model)
    names = [f"layers.1.experts.{e}.act" for e in range(experts)]
    assert set(names) <= set(wrapped.sites)
    (hidden, index, weights), output = seen_by_hand(model, 1)
    plain = model(IDS).logits
    tr = wrapped.run(IDS, capture=names)
    assert torch.equal(tr.logits, plain)                                  # reading changes nothing
    block = model.model.layers[1].mlp.experts
    total = torch.zeros_like(output)
    for e, name in enumerate(names):
        value = tr[name]
        assert value.shape == (2, 8, block.down_proj.shape[-1])
        flat = value.reshape(16, -1)
        routed = (index == e).any(-1)
        assert not flat[~routed].any()                                    # zero where the expert did not run
        gate, up = (hidden[routed] @ block.gate_up_proj[e].T).chunk(2, dim=-1)
        assert torch.allclose(flat[routed], block.act_fn(gate) * up, atol=1e-6)
        weight = (weights * (index == e)).sum(-1, keepdim=True)
        total += weight * (flat @ block.down_proj[e].T)
    assert torch.allclose(total, output, atol=1e-5)                       # the experts add up to the layer


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_expert_neuron_edits_equal_weight_edits(family: str) -> None:
    model, _, _ = tiny_moe(family)
    wrapped = neurodbg.Model(model)
    block = model.model.layers[0].mlp.experts
    width = block.down_proj.shape[-1]
    (_, index, _), _ = seen_by_hand(model, 0)
    e = int(index.flatten().mode().values)                               # an expert with tokens
    ablated = wrapped.run(IDS, interventions=[{"op": "ablate", "site": f"layers.0.experts.{e}.act",
                                               "neurons": [2, 5]}]).logits
    scaled = wrapped.run(IDS, interventions=[{"op": "scale", "site": f"layers.0.experts.{e}.act",
                                              "neurons": [1], "factor": 3.0}]).logits
    plain = model(IDS).logits
    with torch.no_grad():
        saved = block.gate_up_proj.detach().clone(), block.down_proj.detach().clone()
        block.gate_up_proj[e, [2, 5, width + 2, width + 5]] = 0.0        # act(0) * 0: the neurons are silent
        by_weights = model(IDS).logits
        block.gate_up_proj.copy_(saved[0])
        block.down_proj[e, :, 1] *= 3.0                                  # the neuron's output direction, tripled
        scaled_by_weights = model(IDS).logits
        block.down_proj.copy_(saved[1])
    assert not torch.allclose(ablated, plain, atol=1e-4)
    assert torch.allclose(ablated, by_weights, atol=1e-5)
    assert torch.allclose(scaled, scaled_by_weights, atol=1e-5)
    assert torch.equal(model(IDS).logits, plain)                         # the model is left as it was
    # an edit at tokens the expert did not handle changes nothing
    idle = [t for t in range(8) if not (index.view(2, 8, -1)[0, t] == e).any()]
    if idle:
        untouched = wrapped.run(IDS[:1], interventions=[{"op": "set", "site": f"layers.0.experts.{e}.act",
                                                         "value": 9.0, "tokens": idle}]).logits
        assert torch.equal(untouched, model(IDS[:1]).logits)
    with pytest.raises(NeuronIndexError):
        wrapped.run(IDS, interventions=[{"op": "ablate", "site": f"layers.0.experts.{e}.act",
                                         "neurons": [width]}])


def test_expert_neurons_in_a_watched_training_run(tmp_path: Path) -> None:
    """The watcher's statistics of an expert's neurons are over the tokens it ran for."""
    model, _, _ = tiny_moe("mixtral")
    model.train()
    block = model.model.layers[0].mlp.experts
    seen: list = []

    def by_hand(_m, args, _o) -> None:         # expert 0's neurons from the weights of this forward
        hidden, index = args[0].detach(), args[1]
        with torch.no_grad():
            gate, up = (hidden[(index == 0).any(-1)] @ block.gate_up_proj[0].T).chunk(2, dim=-1)
            seen.append(F.silu(gate) * up)

    block.register_forward_hook(by_hand)
    opt = torch.optim.SGD(model.parameters(), 1e-3)
    with neurodbg.watch(model, opt, run=tmp_path / "run", sites=["layers.0.experts.0.act"], flush_every=1) as w:
        loss = model(input_ids=IDS, labels=IDS).loss
        w.log(loss=loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    from neurodbg.train.runs import read

    site = read(tmp_path / "run").sites["layers.0.experts.0.act"]
    values = seen[0]
    assert site.units == block.down_proj.shape[-1]
    assert site.mean[0] == pytest.approx(float(values.double().mean()), rel=1e-4, abs=1e-7)
