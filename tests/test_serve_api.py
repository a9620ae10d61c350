"""The HTTP API on a real server over the real default model and a real described
atlas. Each answer is checked against the Monitor (or the model) called directly."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import neurodbg
from neurodbg.analyze.monitor import Monitor
from neurodbg.analyze.prompt import prepare, prepare_messages
from neurodbg.analyze.streaming import stream_tokens
from neurodbg.atlas import AtlasStore, descriptions, records
from neurodbg.trace.interventions import loads

CASE = "Q: Which number is bigger, 9.11 or 9.9?\nA: 9."


@pytest.fixture(scope="module")
def monitor(default_model: neurodbg.Model, described_atlas: Path) -> Monitor:
    return Monitor(default_model, described_atlas)


def events(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def chat(url: str, body: dict) -> list[dict]:
    response = httpx.post(f"{url}/api/chat", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return events(response)


def test_streamed_greedy_tokens_equal_the_models_own_generate(default_model: neurodbg.Model) -> None:
    prompt = prepare_messages(default_model, [{"role": "user", "content": "Name three fruits."}])
    streamed = [t.id for t in stream_tokens(default_model, prompt, max_new_tokens=12)]
    with default_model.trace() as tr:
        ids = tr.generate(prompt.ids, max_new_tokens=12)
    assert streamed == ids[0, prompt.length:].tolist()


def test_streaming_stops_when_cancelled(default_model: neurodbg.Model) -> None:
    prompt = prepare(default_model, "Once upon a time")
    seen: list[int] = []
    for step in stream_tokens(default_model, prompt, max_new_tokens=20, cancelled=lambda: len(seen) >= 3):
        seen.append(step.id)
    assert len(seen) == 3


def test_one_message_conversation_equals_the_chat_prompt(default_model: neurodbg.Model) -> None:
    a = prepare_messages(default_model, [{"role": "user", "content": CASE}])
    b = prepare(default_model, CASE, chat=True)
    assert torch.equal(a.ids, b.ids) and a.template == b.template
    turns = prepare_messages(default_model, [{"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Hello there"},
                                             {"role": "user", "content": "Bye"}])
    user_text = "".join(t for t, flag in zip(turns.tokens, turns.template, strict=True) if not flag)
    assert "Hi" in user_text and "Hello there" in user_text and user_text.endswith("Bye")


def test_info(served: str) -> None:
    data = httpx.get(f"{served}/api/info").json()
    assert data["model"] == "smollm2-135m-instruct" and data["layers"] == 30
    assert data["atlas"]["neurons"] == 3072 and data["atlas"]["descriptions"] == 6144
    assert data["limits"]["max_new_tokens"] == 24 and data["token_required"] is False


def test_chat_streams_the_greedy_reply_and_the_token_view(served: str, monitor: Monitor) -> None:
    got = chat(served, {"input": {"text": CASE}, "max_new_tokens": 6})
    kinds = [e["type"] for e in got]
    assert kinds[0] == "prompt" and kinds[-1] == "done" and kinds.count("token") == 6
    prompt = monitor.prompt(CASE)
    with monitor.model.trace() as tr:
        expected = tr.generate(prompt.ids, max_new_tokens=6)[0].tolist()
    done = got[-1]
    assert done["ids"] == expected and done["start"] == prompt.length
    assert [e["id"] for e in got if e["type"] == "token"] == expected[prompt.length:]
    view = [p.to_dict() for p in monitor.tokens(monitor.from_ids(expected))]
    assert done["positions"] == view
    first = got[1]
    assert first["top"][0]["id"] == first["id"] and first["prob"] == view[prompt.length - 1]["top"][0]["prob"]


def test_chat_conversation_turns(served: str) -> None:
    first = chat(served, {"input": {"messages": [{"role": "user", "content": "Say hello."}]}, "max_new_tokens": 8})
    done = first[-1]
    assert done["template"][:3] == [True, True, True] and not any(done["template"][done["start"]:])
    reply = done["reply"]
    assert "<|im_end|>" not in reply and reply.strip()
    second = chat(served, {"input": {"messages": [{"role": "user", "content": "Say hello."},
                                                  {"role": "assistant", "content": reply},
                                                  {"role": "user", "content": "Again."}]}, "max_new_tokens": 4})
    assert len(second[0]["ids"]) > len(done["ids"])


def test_tokens_endpoint_equals_the_monitor(served: str, monitor: Monitor) -> None:
    data = httpx.post(f"{served}/api/tokens", json={"input": {"text": CASE}, "k": 3}, timeout=60).json()
    assert data["positions"] == [p.to_dict() for p in monitor.tokens(CASE, k=3)]


def test_analyze_a_clicked_token_equals_the_monitor(served: str, monitor: Monitor) -> None:
    ids = monitor.prompt(CASE).ids[0].tolist()
    body = {"input": {"ids": ids[:-1]}, "target_id": ids[-1], "mode": "activation", "top": 40}
    data = httpx.post(f"{served}/api/analyze", json=body, timeout=120).json()
    direct = monitor.analyze(monitor.from_ids(ids[:-1]), target=ids[-1], mode="activation", top=40).to_dict()
    assert data == json.loads(json.dumps(direct))
    assert data["target_token"] == "." and all(n["description"] for n in data["neurons"])
    attribution = httpx.post(f"{served}/api/analyze", json={**body, "mode": "attribution"}, timeout=120).json()
    assert attribution["mode"] == "attribution" and len(attribution["neurons"]) == 40
    # the small atlas's two layers: the 40 most active neurons share no concept, the 40 that raise "." do
    assert attribution["clusters"] and all(len(c["members"]) >= 3 for c in attribution["clusters"])


def test_neuron_page(served: str, described_atlas: Path, default_model: neurodbg.Model) -> None:
    data = httpx.get(f"{served}/api/neuron", params={"id": "L1/N5"}, timeout=60).json()
    store = AtlasStore.open(described_atlas)
    rec = records.neuron(store, 1, 5, decode=default_model.tokenizer.decode)
    assert data["id"] == "L1/N5" and data["mean"] == rec.mean
    top = data["exemplars"]["+"][0]
    assert top["tokens"] == rec.exemplars["+"][0].tokens
    assert np.allclose(top["acts"], rec.exemplars["+"][0].acts, atol=1e-4)
    assert sum(data["histogram"]["counts"]) == sum(rec.hist)
    assert len(data["histogram"]["edges"]) == len(data["histogram"]["counts"]) + 1
    assert data["promoted"][0]["id"] == int(rec.promoted[0][0])
    assert data["descriptions"]["+"]["best"]["text"] and data["descriptions"]["+"]["candidates"] is None
    best = data["descriptions"]["+"]["best"]
    stored = dict(descriptions.all_scores(store, best["explainer"]))[(1, 5, "+")]
    assert best["scores"] == stored and {"simulation", "detection", "fuzzing", "shuffled"} <= set(best["scores"])
    full = httpx.get(f"{served}/api/neuron", params={"id": "L1/N5", "candidates": "true"}).json()
    assert len(full["descriptions"]["+"]["candidates"]) == full["descriptions"]["+"]["count"] >= 1
    store.close()


def test_search_equals_the_index(served: str, monitor: Monitor) -> None:
    data = httpx.get(f"{served}/api/search", params={"q": "digits and numbers", "k": 5}, timeout=120).json()
    direct = [h.to_dict() for h in monitor.search("digits and numbers", 5)]
    assert data["hits"] == json.loads(json.dumps(direct)) and len(data["hits"]) == 5
    only_minus = httpx.get(f"{served}/api/search", params={"q": "digits", "polarity": "-", "k": 5}, timeout=60).json()
    assert {h["polarity"] for h in only_minus["hits"]} == {"-"}


def test_steering_preview_apply_save_and_replay(served: str, monitor: Monitor) -> None:
    spec = {"query": "digits and numbers", "k": 20, "value": 0}
    preview = httpx.post(f"{served}/api/steer/preview", json={"spec": spec}, timeout=60).json()
    assert len(preview["neurons"]) == 20 and all(n["value"] == 0 for n in preview["neurons"])
    saved = loads(preview["saved"])
    ids = monitor.prompt(CASE).ids[0].tolist()
    body = {"input": {"ids": ids}, "spec": spec, "target": "1", "max_new_tokens": 5}
    got = events(httpx.post(f"{served}/api/steer", json=body, timeout=120))
    progress = [e for e in got if e["type"] == "progress"]
    assert [p["stage"] for p in progress] == ["baseline"] * 5 + ["steered"] * 5
    result = got[-1]
    direct = monitor.steer(monitor.from_ids(ids), saved, target="1", max_new_tokens=5).to_dict()
    for key in ("baseline", "steered", "baseline_logprob", "steered_logprob", "neurons"):
        assert result[key] == direct[key]
    assert loads(result["saved"]) == saved
    replay = {"input": {"ids": ids}, "interventions": json.loads(result["saved"]), "target": "1",
              "max_new_tokens": 5}
    again = events(httpx.post(f"{served}/api/steer", json=replay, timeout=120))[-1]
    assert again["steered"] == result["steered"] and again["steered_logprob"] == result["steered_logprob"]


def test_lens_and_attention_equal_the_monitor(served: str, monitor: Monitor) -> None:
    data = httpx.post(f"{served}/api/lens", json={"input": {"text": CASE}, "target": "1"}, timeout=60).json()
    assert data["layers"] == [x.to_dict() for x in monitor.lens(CASE, target="1")]
    with torch.no_grad():
        logits = monitor.model.module(monitor.prompt(CASE).ids).logits[0]
    tokenizer = monitor.model.tokenizer
    assert data["grid"]["top_tokens"][-1] == [tokenizer.decode([int(i)]) for i in logits.argmax(-1)]
    att = httpx.post(f"{served}/api/attention", json={"input": {"text": CASE}, "layer": 3}, timeout=60).json()
    direct = monitor.attention(CASE, 3)
    assert att["heads"] == direct.shape[0] and np.allclose(att["weights"], direct, atol=1e-4)


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/api/tokens", b"{bad json", 422, "malformed JSON"),
    ("/api/tokens", {"input": {"text": "a", "ids": [1]}}, 422, "exactly one of text, messages or ids"),
    ("/api/tokens", {"input": {"text": "   "}}, 400, "empty"),
    ("/api/tokens", {"input": {"ids": [10**9]}}, 400, "outside the vocabulary"),
    ("/api/tokens", {"input": {"text": "word " * 1000}}, 400, "at most 384"),
    ("/api/tokens", {"input": {"text": "x" * 20_000}}, 422, "at most 16000 characters"),
    ("/api/tokens", {"input": {"text": "hi"}, "extra": 1}, 422, "extra"),
    ("/api/chat", {"input": {"text": "hi"}, "max_new_tokens": 200}, 400, "limit of 24"),
    ("/api/analyze", {"input": {"text": CASE}, "target": " bigger than"}, 400, "give a single token"),
    ("/api/analyze", {"input": {"text": CASE}, "position": 500}, 400, "outside the prompt"),
    ("/api/analyze", {"input": {"text": CASE}, "target_id": 10**9}, 400, "outside the vocabulary"),
    ("/api/attention", {"input": {"text": CASE}, "layer": 99}, 400, "no layer 99"),
    ("/api/steer/preview", {"spec": {"query": "zzz", "neurons": ["L0/N1"]}}, 400, "exactly one"),
    ("/api/steer/preview", {"spec": {"neurons": ["L9/N1"]}}, 400, "not in the atlas"),
    ("/api/steer", {"input": {"text": CASE}}, 422, "exactly one of spec or interventions"),
    ("/api/steer", {"input": {"text": CASE}, "interventions": {"interventions": [{"op": "nope"}]}}, 400, ""),
])
def test_bad_input_is_a_4xx_with_a_message(served: str, path: str, body: object, status: int, message: str) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{served}{path}", content=content, headers={"content-type": "application/json"},
                          timeout=60)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and message in detail and "\n" not in detail


def test_unknown_neurons_and_oversized_bodies(served: str) -> None:
    missing = httpx.get(f"{served}/api/neuron", params={"id": "L7/N5"})
    assert missing.status_code == 404 and "no neuron L7/N5" in missing.json()["detail"]
    malformed = httpx.get(f"{served}/api/neuron", params={"id": "../../etc/passwd"})
    assert malformed.status_code == 400 and "malformed neuron id" in malformed.json()["detail"]
    huge = httpx.post(f"{served}/api/tokens", content=b"{" + b" " * 300_000 + b"}",
                      headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "over" in huge.json()["detail"]

    def chunks():
        for _ in range(40):
            yield b" " * 10_000
    streamed = httpx.post(f"{served}/api/tokens", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert httpx.get(f"{served}/api/info").status_code == 200


def test_only_loopback_host_names_are_answered(served: str) -> None:
    response = httpx.get(f"{served}/api/info", headers={"host": "attacker.example:80"})
    assert response.status_code == 421
    assert httpx.get(f"{served}/api/info", headers={"host": "localhost"}).status_code == 200


def test_a_client_leaving_mid_generation_frees_the_model(served: str, monitor: Monitor) -> None:
    with httpx.Client(timeout=60) as client, client.stream(
            "POST", f"{served}/api/chat", json={"input": {"text": "Once upon a time"}, "max_new_tokens": 24}) as r:
        lines = r.iter_lines()
        assert json.loads(next(lines))["type"] == "prompt"
        assert json.loads(next(lines))["type"] == "token"
    # the stream was dropped after one token; the server goes on serving, correctly
    data = httpx.post(f"{served}/api/tokens", json={"input": {"text": CASE}, "k": 2}, timeout=60).json()
    assert data["positions"] == [p.to_dict() for p in monitor.tokens(CASE, k=2)]
    deadline = time.monotonic() + 30
    while httpx.get(f"{served}/api/info").json()["waiting"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(f"{served}/api/info").json()["waiting"] == 0


def test_sixteen_clients_analysing_at_once(served: str, monitor: Monitor) -> None:
    ids = monitor.prompt(CASE).ids[0].tolist()
    bodies = [{"input": {"ids": ids[:n]}, "target_id": ids[n], "mode": "attribution" if n % 2 else "activation",
               "top": 30} for n in range(len(ids) - 16, len(ids))]

    def ask(body: dict) -> tuple[int, dict]:
        response = httpx.post(f"{served}/api/analyze", json=body, timeout=600)
        return response.status_code, response.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, bodies))
    assert [status for status, _ in answers] == [200] * 16
    for body, (_, data) in zip(bodies, answers, strict=True):   # each equals the same request made alone
        alone = monitor.analyze(monitor.from_ids(body["input"]["ids"]), target=body["target_id"],
                                mode=body["mode"], top=30).to_dict()
        assert data == json.loads(json.dumps(alone))


def test_a_token_is_required_off_loopback(default_model: neurodbg.Model, described_atlas: Path) -> None:
    from serving import running

    from neurodbg.serve import create_app

    app = create_app(Monitor(default_model, described_atlas), token="s3cret-token", loopback_only=False)
    with running(app) as url:
        refused = httpx.get(f"{url}/api/info")
        assert refused.status_code == 401 and "access token" in refused.json()["detail"]
        assert httpx.get(f"{url}/").status_code == 401
        assert httpx.get(f"{url}/api/info", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/api/info", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
        link = httpx.get(f"{url}/?token=s3cret-token")
        assert link.status_code == 303 and link.headers["location"] == "/"
        chinese = httpx.get(f"{url}/?lang=zh&token=s3cret-token")       # the rest of the query survives the redirect
        assert chinese.status_code == 303 and chinese.headers["location"] == "/?lang=zh"
        cookie = link.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        with httpx.Client(base_url=url, cookies=link.cookies) as browser:
            assert browser.get("/").status_code == 200
            assert browser.get("/api/info").json()["token_required"] is True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serve(described_atlas: Path, default_lens: Path, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "neurodbg.cli.main", "serve"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NEURODBG_TOKEN": ""}
    missing = subprocess.run([*cli, "--atlas", str(tmp_path / "nowhere")], capture_output=True, text=True, env=env,
                             timeout=120)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"error: no atlas at {tmp_path / 'nowhere'}: the directory does "
                                                   f"not exist"]
    with socket.socket() as busy:               # a port someone else holds: one line, before loading anything
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        refused = subprocess.run([*cli, "--port", str(taken)], capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{taken}: Address already in use"]
    from families import tiny_model

    from neurodbg.analyze.tuned_lens import TunedLens

    other = TunedLens.identity(neurodbg.Model(tiny_model("llama"), name="tiny-llama")).save(tmp_path / "o.st")
    wrong = subprocess.run([*cli, "--port", str(_free_port()), "--tuned-lens", str(other)], capture_output=True,
                           text=True, env=env, timeout=300)
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert "trained for another model: tiny-llama" in wrong.stderr
    port = _free_port()
    proc = subprocess.Popen([*cli, "--atlas", str(described_atlas), "--host", "0.0.0.0", "--port", str(port),
                             "--tuned-lens", str(default_lens)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        line = ""
        while "serving" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the server exited"
        token = re.search(r"\?token=(\S+)", line)
        assert token, line
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                status = httpx.get(f"{url}/api/info").status_code
                break
            except httpx.ConnectError:
                time.sleep(0.2)
        assert status == 401
        ok = httpx.get(f"{url}/api/info", headers={"authorization": f"Bearer {token[1]}"})
        assert ok.status_code == 200 and ok.json()["token_required"] is True and ok.json()["tuned_lens"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
