"""Schemathesis against the server's own OpenAPI schema: whatever it sends, valid or
not, the server answers without a 5xx, and a stream it accepts never reports an
error. Then every numeric field of every request (and of interventions) is sent
NaN, Infinity and -Infinity, which Python's JSON reads, and must be refused."""

from __future__ import annotations

import itertools
import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

EXAMPLES = 12


def operations(served: str) -> list:
    schema = schemathesis.openapi.from_dict(httpx.get(f"{served}/api/openapi.json", timeout=60).json())
    return [result.ok() for result in schema.get_all_operations()]


def test_the_schema_lists_every_endpoint(served: str) -> None:
    labels = {op.label for op in operations(served)}
    assert labels == {"GET /api/info", "POST /api/tokens", "POST /api/chat", "POST /api/analyze",
                      "GET /api/neuron", "GET /api/search", "POST /api/steer/preview", "POST /api/steer",
                      "POST /api/lens", "POST /api/attention", "GET /api/runs", "GET /api/runs/{name}",
                      "POST /api/moe/route", "POST /api/consistency", "POST /api/embeddings"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(served: str, mode: GenerationMode) -> None:
    for operation in operations(served):
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            response = case.call(base_url=served, timeout=300)
            assert response.status_code < 500, \
                f"{case.method} {case.path} {case.body!r:.300}: {response.status_code} {response.text[:500]}"
            if response.headers.get("content-type", [""])[0].startswith("application/x-ndjson"):
                # what a stream could not do is refused before it starts: no error event at all
                events = [json.loads(line) for line in response.text.splitlines() if line]
                assert not [e for e in events if e.get("type") == "error"], response.text[:500]

        try:
            check()
        except Unsatisfiable:
            assert operation.label in ("GET /api/info", "GET /api/runs")    # no inputs: nothing to make invalid


# -- non-finite numbers ---------------------------------------------------------------------------
# Python's JSON reads NaN, Infinity and -Infinity, so a client can send them; every numeric field of
# every request must refuse them with a 4xx naming the field (an error that echoed them back made
# invalid JSON, a 500, and range checks let NaN through).
NON_FINITE = ("NaN", "Infinity", "-Infinity")
BASE_BODIES = {
    "POST /api/tokens": {"input": {"text": "hi"}},
    "POST /api/chat": {"input": {"text": "hi"}, "max_new_tokens": 1},
    "POST /api/analyze": {"input": {"text": "Which is bigger, 9.11 or 9.9?"}, "top": 5},
    "POST /api/steer/preview": {"spec": {"neurons": ["L0/N1"]}},
    "POST /api/steer": {"input": {"text": "hi"}, "spec": {"neurons": ["L0/N1"]}, "max_new_tokens": 1},
    "POST /api/lens": {"input": {"text": "hi"}},
    "POST /api/attention": {"input": {"text": "hi"}, "layer": 0},
    "POST /api/consistency": {"input": {"text": "2 + 2 ="}, "samples": 2, "max_new_tokens": 2, "fork_neurons": 0},
    "POST /api/embeddings": {"items": ["cat", "dog"]},
}


def _numeric_paths(schema: dict, node: dict, path: tuple = ()) -> list[tuple[tuple, str]]:
    """(path, 'number' | 'integer') of every numeric leaf a request body can hold."""
    if "$ref" in node:
        return _numeric_paths(schema, schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]], path)
    out = []
    for option in node.get("anyOf", []) + node.get("oneOf", []):
        out += _numeric_paths(schema, option, path)
    kind = node.get("type")
    if kind in ("number", "integer"):
        out.append((path, kind))
    elif kind == "object":
        for name, sub in node.get("properties", {}).items():
            out += _numeric_paths(schema, sub, (*path, name))
    elif kind == "array":
        out += _numeric_paths(schema, node.get("items", {}), (*path, 0))
    return out


def _with(body: dict, path: tuple, value: object) -> dict:
    out = json.loads(json.dumps(body))
    node: object = out
    for here, nxt in itertools.pairwise(path):
        child = node[here] if (isinstance(node, dict) and here in node) or isinstance(node, list) else None
        if isinstance(child, dict) and isinstance(nxt, int):   # a list branch where the base has one object
            child = [child]
            node[here] = child                     # type: ignore[index]
        if not isinstance(child, (dict, list)):
            child = [None] if isinstance(nxt, int) else {}
            node[here] = child                     # type: ignore[index]
        node = child
    node[path[-1]] = value                         # type: ignore[index]
    return out


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"the response holds {constant}, which is not JSON: {text[:300]}")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_refused_in_every_field(served: str) -> None:
    schema = httpx.get(f"{served}/api/openapi.json", timeout=60).json()
    checked = 0
    for label, base in BASE_BODIES.items():
        method, route = label.split(" ")
        body_schema = schema["paths"][route][method.lower()]["requestBody"]["content"]["application/json"]["schema"]
        assert httpx.post(f"{served}{route}", json=base, timeout=300).status_code == 200, label
        for path, kind in _numeric_paths(schema, body_schema):
            for constant in NON_FINITE:
                text = json.dumps(_with(base, path, float(constant.replace("Infinity", "inf"))))
                assert constant in text
                r = httpx.post(f"{served}{route}", content=text, headers={"content-type": "application/json"},
                               timeout=300)
                detail = _strict_json(r.text)["detail"]          # type: ignore[index]
                assert r.status_code == 422, (label, path, constant, r.status_code, r.text[:300])
                if kind == "number":
                    assert "finite" in detail and str(path[-1]) in detail, (label, path, detail)
                checked += 1
    assert checked >= 3 * 9          # threshold, spec.min_score / value / level (twice), positions, k, ...
    for constant in ("nan", "inf", "-inf"):
        r = httpx.get(f"{served}/api/search", params={"q": "digits", "min_score": constant}, timeout=60)
        assert r.status_code == 422 and "finite" in _strict_json(r.text)["detail"], r.text   # type: ignore[index]


@pytest.mark.parametrize("edit", [
    {"op": "set", "neurons": [1], "value": "NaN"}, {"op": "set", "neurons": [1, 2], "value": [1.0, "Infinity"]},
    {"op": "scale", "neurons": [1], "factor": "-Infinity"}, {"op": "add", "value": "NaN"},
    {"op": "add_vector", "vector": ["NaN"] * 576}, {"op": "add_vector", "vector": [0.0] * 576, "scale": "Infinity"},
])
def test_non_finite_numbers_in_interventions_are_refused(served: str, edit: dict) -> None:
    site = "layers.0.resid_out" if edit["op"] == "add_vector" else "layers.0.mlp.act"
    text = json.dumps({"input": {"text": "hi"}, "max_new_tokens": 1,
                       "interventions": {"version": 1, "interventions": [{**edit, "site": site}]}})
    text = text.replace('"NaN"', "NaN").replace('"Infinity"', "Infinity").replace('"-Infinity"', "-Infinity")
    r = httpx.post(f"{served}/api/steer", content=text, headers={"content-type": "application/json"}, timeout=300)
    assert r.status_code == 400 and "finite" in _strict_json(r.text)["detail"], r.text   # type: ignore[index]


@pytest.mark.parametrize(("edit", "words"), [
    ({"op": "ablate", "site": "layers.3.mlp.act", "neurons": [1536]}, "out of range"),
    ({"op": "set", "site": "layers.3.mlp.act", "neurons": [1, 2], "value": [1.0]}, "exactly that many"),
    ({"op": "add_vector", "site": "layers.3.resid_out", "vector": [1.0, 2.0]}, "vector has 2 entries"),
    ({"op": "ablate", "site": "layers.3.mlp.act", "neurons": [1], "tokens": [40]}, "outside the prompt"),
    ({"op": "patch", "site": "layers.3.mlp.act", "source": "clean"}, "patch names source"),
    ({"op": "ablate", "site": "layers.30.mlp.act"}, "layers.30"),
])
def test_interventions_that_cannot_apply_are_refused_before_the_stream(served: str, edit: dict, words: str) -> None:
    r = httpx.post(f"{served}/api/steer", json={"input": {"text": "Which is bigger, 9.11 or 9.9?"},
                                                "interventions": [edit], "max_new_tokens": 2}, timeout=300)
    assert r.status_code in (400, 404) and words in r.json()["detail"], (r.status_code, r.text[:300])
