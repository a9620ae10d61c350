"""Interventions are plain data that round-trip through JSON."""

from __future__ import annotations

import json

import pytest

import neurodbg
from neurodbg.trace import interventions as ivs

EXAMPLES = [
    {"op": "set", "site": "layers.5.mlp.act", "neurons": [1, 2], "tokens": [0, -1], "value": [0.5, 1.0]},
    {"op": "scale", "site": "layers.*.mlp.act", "neurons": [7], "factor": 2.0, "tokens": "prompt"},
    {"op": "add", "site": "layers.3.resid_out", "value": 0.25, "tokens": "generated"},
    {"op": "ablate", "site": "layers.5.mlp.act", "neurons": [7], "tokens": [1, 4]},
    {"op": "add_vector", "site": "layers.2.resid_out", "vector": [0.0, 1.0, -1.0], "scale": 4.0},
    {"op": "patch", "site": "layers.2.resid_out", "source": "clean", "tokens": [3]},
]


def test_round_trip() -> None:
    parsed = ivs.parse_interventions(EXAMPLES)
    assert [type(p).__name__ for p in parsed] == ["SetValue", "Scale", "Add", "Ablate", "AddVector", "Patch"]
    text = ivs.dumps(parsed)
    again = ivs.loads(text)
    assert again == parsed
    data = json.loads(text)
    assert data["version"] == 1 and data["interventions"][3]["neurons"] == [7]
    # a bare list and a single object load too
    assert ivs.loads(json.dumps(EXAMPLES)) == parsed
    assert ivs.loads(json.dumps(EXAMPLES[3])) == parsed[3:4]


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "malformed intervention JSON"),
    ('{"op": "explode", "site": "x"}', "invalid intervention"),
    ('{"op": "ablate"}', "site"),
    ('{"op": "ablate", "site": "a", "neurons": [-1]}', "neurons"),
    ('{"op": "scale", "site": "a"}', "factor"),
    ('{"op": "ablate", "site": "a", "tokens": "sometimes"}', "tokens"),
    ('{"op": "ablate", "site": "a", "colour": "red"}', "colour"),
    ('{"version": 2, "interventions": []}', "version"),
])
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(neurodbg.InterventionError, match=message):
        ivs.loads(text)


def test_errors_are_one_line() -> None:
    with pytest.raises(neurodbg.InterventionError) as info:
        ivs.loads('[{"op": "scale"}, {"op": "set"}]')
    assert "\n" not in str(info.value)
