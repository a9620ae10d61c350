"""The web API's tuned lens, sampling, self-consistency and embedding maps on a real server
over the real default model; each answer equals the library called directly, and what a
server cannot or may not do is a 4xx with one line."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

import neurodbg
from neurodbg.analyze.consistency import consistency, sample
from neurodbg.analyze.embedding_map import embedding_map
from neurodbg.analyze.monitor import Monitor
from neurodbg.analyze.prompt import prepare
from neurodbg.analyze.sampling import Sampling
from neurodbg.analyze.streaming import stream_tokens
from neurodbg.analyze.tuned_lens import load_tuned_lens

PROMPT = "The capital of France is Paris, and the capital of Italy is"
QUESTION = "What is 345 * 678? Answer with the number."


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=600)


def test_the_lens_switch(served: str, default_model: neurodbg.Model, default_lens: Path) -> None:
    assert httpx.get(f"{served}/api/info").json()["tuned_lens"] is True
    body = {"input": {"text": PROMPT}, "k": 3}
    tuned = post(served, "/api/lens", {**body, "tuned": True}).json()
    plain = post(served, "/api/lens", body).json()
    monitor = Monitor(default_model)
    assert tuned == monitor.lens_view(PROMPT, k=3, tuned=load_tuned_lens(default_lens, default_model)).to_dict()
    assert plain == monitor.lens_view(PROMPT, k=3).to_dict()
    assert tuned["lens"] == "tuned" and plain["lens"] == "logit"
    assert tuned["layers"][-1] == plain["layers"][-1] and tuned["layers"][0] != plain["layers"][0]


def test_a_server_without_a_tuned_lens_says_so(default_model: neurodbg.Model) -> None:
    from serving import running

    from neurodbg.serve import create_app

    with running(create_app(Monitor(default_model))) as url:
        assert httpx.get(f"{url}/api/info").json()["tuned_lens"] is False
        refused = post(url, "/api/lens", {"input": {"text": PROMPT}, "tuned": True})
    assert refused.status_code == 400 and "no tuned lens" in refused.json()["detail"]


def test_a_lens_for_another_model_is_refused_at_start(default_model: neurodbg.Model, tmp_path: Path) -> None:
    from families import tiny_model

    from neurodbg.analyze.tuned_lens import TunedLens
    from neurodbg.errors import TunedLensMismatchError
    from neurodbg.serve import create_app

    other = TunedLens.identity(neurodbg.Model(tiny_model("llama"), name="tiny-llama"))
    with pytest.raises(TunedLensMismatchError):
        create_app(Monitor(default_model), tuned_lens=other)


def test_sampled_chat_equals_generate(served: str, default_model: neurodbg.Model) -> None:
    settings = {"temperature": 0.9, "top_k": 40, "top_p": 0.9, "seed": 7}
    response = post(served, "/api/chat", {"input": {"text": "Once upon a time"}, "max_new_tokens": 16,
                                          "sampling": settings})
    assert response.status_code == 200, response.text
    streamed = [e["id"] for e in map(json.loads, response.text.splitlines()) if e["type"] == "token"]
    prompt = prepare(default_model, "Once upon a time")
    generated = sample(default_model, prompt, 1, Sampling(**settings), max_new_tokens=16)[0, prompt.length:]
    assert streamed == generated[:len(streamed)].tolist() and len(streamed) >= 8
    # and the library's stream is the same loop
    assert [t.id for t in stream_tokens(default_model, prompt, max_new_tokens=16,
                                        sampling=Sampling(**settings))] == streamed
    greedy = post(served, "/api/chat", {"input": {"text": "Once upon a time"}, "max_new_tokens": 16})
    assert [e["id"] for e in map(json.loads, greedy.text.splitlines()) if e["type"] == "token"] != streamed


def test_consistency_equals_the_library(served: str, default_model: neurodbg.Model) -> None:
    body = {"input": {"text": QUESTION, "chat": True}, "samples": 4, "max_new_tokens": 12,
            "sampling": {"temperature": 0.8, "top_k": 50, "top_p": 0.95, "seed": 1}, "fork_neurons": 5}
    response = post(served, "/api/consistency", body)
    assert response.status_code == 200, response.text
    direct = consistency(default_model, prepare(default_model, QUESTION, chat=True), samples=4, max_new_tokens=12,
                         sampling=Sampling(0.8, 50, 0.95, 1), fork_neurons=5).to_dict()
    assert response.json() == json.loads(json.dumps(direct))
    data = response.json()
    assert sum(data["votes"].values()) == 4 and len(data["answers"]) == 4


@pytest.mark.parametrize(("change", "status", "words"), [
    ({"samples": 9}, 400, "samples 9 is over this server's limit of 8"),
    ({"extract": "words"}, 400, "unknown extract mode"),
    ({"extract": "regex:("}, 400, "bad regex"),
    ({"sampling": {"temperature": 0}}, 422, "temperature"),
    ({"sampling": {"top_p": 1.5}}, 422, "top_p"),
    ({"triage": 2}, 422, "triage"),
])
def test_consistency_bad_input(served: str, change: dict, status: int, words: str) -> None:
    response = post(served, "/api/consistency", {"input": {"text": QUESTION}, "samples": 2, "max_new_tokens": 4,
                                                 **change})
    assert response.status_code == status and words in response.json()["detail"], response.text


def test_embedding_map_equals_the_library(served: str, default_model: neurodbg.Model) -> None:
    items = ["bank@I sat on the river bank", "bank@She paid the money into the bank", "river", "money"]
    response = post(served, "/api/embeddings", {"items": items, "kind": "contextual", "layer": 10})
    assert response.status_code == 200, response.text
    direct = embedding_map(default_model, items, kind="contextual", layer=10).to_dict()
    assert response.json() == json.loads(json.dumps(direct))
    too_many = post(served, "/api/embeddings", {"items": [f"w{i}" for i in range(17)]})
    assert too_many.status_code == 400 and "over this server's limit of 16" in too_many.json()["detail"]
    missing = post(served, "/api/embeddings", {"items": ["bank@The river", "cat"], "kind": "contextual"})
    assert missing.status_code == 400 and "does not occur" in missing.json()["detail"]
