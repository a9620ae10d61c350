"""Any nn.Module, down to a three-layer MLP, traces by raw path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import neurodbg


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 64)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(64, 32)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


@pytest.fixture()
def net() -> SmallNet:
    torch.manual_seed(0)
    return SmallNet().eval()


def test_which_fc2_neurons_fire(net: SmallNet) -> None:
    model = neurodbg.wrap(net)
    x = torch.randn(16, 10)
    with model.trace(capture=["relu2:output", "fc2:output"]) as tr:
        y = net(x)
    assert torch.equal(y, net(x))
    fired = tr["relu2:output"]
    assert fired.shape == (16, 32)
    expected = torch.relu(net.fc2(torch.relu(net.fc1(x))))
    assert torch.equal(fired, expected)
    firing = (fired > 0).any(0).nonzero().flatten().tolist()
    assert firing == (expected > 0).any(0).nonzero().flatten().tolist()
    assert torch.equal(tr["fc2:output"].amax(0), model.run(x, capture="fc2:output", reduce="max")["fc2:output"])


def test_edit_a_plain_module(net: SmallNet) -> None:
    model = neurodbg.wrap(net)
    x = torch.randn(4, 10)
    tr = model.run(x, capture="fc3:input", interventions=[{"op": "ablate", "site": "relu2:output",
                                                            "neurons": [0, 5]}])
    h = tr["fc3:input"]
    assert bool((h[:, [0, 5]] == 0).all())
    assert torch.equal(h[:, 1:5], torch.relu(net.fc2(torch.relu(net.fc1(x))))[:, 1:5])
    with pytest.raises(neurodbg.InterventionError, match="no token axis"):
        model.run(x, interventions=[{"op": "ablate", "site": "fc2:output", "tokens": [0]}])


def test_canonical_names_need_a_known_family(net: SmallNet) -> None:
    model = neurodbg.wrap(net)
    with pytest.raises(neurodbg.UnsupportedArchitectureError) as info:
        model.resolve("layers.0.mlp.act")
    message = str(info.value)
    for family in ("llama", "gpt2", "gpt_neox", "bert"):
        assert family in message
    assert "Raw paths" in message
    assert model.sites == []


def test_raw_path_patterns(net: SmallNet) -> None:
    model = neurodbg.wrap(net)
    assert [s.name for s in model.resolve("fc*:output")] == ["fc1:output", "fc2:output", "fc3:output"]
    with pytest.raises(neurodbg.UnknownSiteError, match="no module 'fc9'"):
        model.resolve("fc9:output")
    with pytest.raises(neurodbg.UnknownSiteError, match="malformed raw site"):
        model.resolve("fc1:sideways")


def test_wrap_rejects_non_modules() -> None:
    with pytest.raises(TypeError):
        neurodbg.wrap("not a module")
