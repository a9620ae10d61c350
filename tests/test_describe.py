"""Descriptions on the real default model: a small real atlas of its first layers,
the statistical explainer and simulator, scoring on held-out exemplars only,
resumable storage, search, and the CLI's bad-input paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import neurodbg
from neurodbg.atlas import AtlasStore, descriptions
from neurodbg.describe.exemplars import ExemplarReader
from neurodbg.describe.explainers import make
from neurodbg.describe.runner import background, describe
from neurodbg.describe.scoring import pearson, score

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))


@pytest.fixture(scope="module")
def atlas(small_atlas: Path) -> Path:
    return small_atlas


@pytest.fixture(scope="module")
def described(described_atlas: Path) -> Path:
    return described_atlas


def test_held_out_exemplars_are_never_shown(atlas: Path) -> None:
    store = AtlasStore.open(atlas)
    reader = ExemplarReader(store)
    for neuron, by_kind in list(reader.layer(0))[:50]:
        for polarity in "+-":
            ex = reader.build(0, neuron, polarity, by_kind)
            shown = {e.seq_index for e in ex.shown}
            assert shown.isdisjoint(e.seq_index for e in ex.held_out)
            assert len(ex.shown) == len(ex.held_out) == 10 and len(ex.held_out_random) == 10


def test_score_is_pearson_over_held_out_tokens(described: Path, default_model: neurodbg.Model) -> None:
    """Recompute a stored score independently: simulate from the stored spec with a
    hand-written table lookup and correlate with the stored activations via numpy."""
    store = AtlasStore.open(described)
    reader = ExemplarReader(store)
    for neuron, by_kind in list(reader.layer(1))[:40:7]:
        ex = reader.build(1, neuron, "+", by_kind)
        stored = descriptions.for_neuron(store, 1, neuron, "+")[0]
        spec = stored.spec
        assert spec is not None
        preds, trues = [], []
        for e in ex.scoring:
            for pos in range(e.start, len(e.ids)):
                token = int(e.ids[pos])
                weight = spec["tokens"].get(str(token), spec["tokens"].get(token))
                p = weight if weight is not None else None
                if p is None:
                    p = spec["baseline"]
                    if spec["class"] is not None:
                        from neurodbg.describe.token_classes import token_class
                        if token_class(default_model.tokenizer.decode([token])) == spec["class"]:
                            p = spec["class_weight"]
                if spec.get("after") is not None and pos > 0 and int(e.ids[pos - 1]) == spec["after"]:
                    p = max(p, spec["after_weight"])
                preds.append(p)
                trues.append(float(e.acts[pos]))
        expected = np.corrcoef(preds, trues)[0, 1] if np.std(preds) > 0 else None
        if expected is None:
            assert stored.score is None
        else:
            assert stored.score == pytest.approx(expected, abs=1e-6)


def test_pearson_and_score_helpers() -> None:
    assert pearson(np.array([1.0, 2, 3]), np.array([2.0, 4, 6])) == pytest.approx(1.0)
    assert pearson(np.array([1.0, 1, 1]), np.array([2.0, 4, 6])) is None
    assert score([], []) is None


def test_a_digit_neuron_is_named_scored_and_found(described: Path) -> None:
    """Some neuron in the first layers fires on digits: its description says so, it
    scores well, and searching for the concept returns it in the top 10."""
    from neurodbg.search.atlas_search import AtlasSearch

    store = AtlasStore.open(described)
    digit = [e for e in descriptions.best(store) if "digits and numbers" in e.text and (e.score or 0) >= 0.5]
    assert digit, "no neuron described as firing on digits with score >= 0.5"
    best = max(digit, key=lambda e: e.score or 0)
    assert best.score is not None and best.score >= 0.6
    hits = AtlasSearch(store).search("numbers and digits", k=10)
    assert any(h.id in {e.id for e in digit} for h in hits), [h.text for h in hits]


def test_rerun_skips_finished_work_and_keeps_descriptions(described: Path, default_model: neurodbg.Model) -> None:
    store = AtlasStore.open(described)
    before = descriptions.count(store)
    reader = ExemplarReader(store)
    explainer, simulator = make("stat", background(store, default_model.tokenizer, reader))
    again = describe(store, explainer, simulator, reader=reader, progress=False)
    assert again.described == 0 and again.skipped == 2 * 1536 * 2
    assert descriptions.count(store) == before


def test_search_filters(described: Path) -> None:
    from neurodbg.search.atlas_search import AtlasSearch

    search = AtlasSearch(AtlasStore.open(described))
    hits = search.search("punctuation", k=20, layers=[1], polarity="-", min_score=0.2)
    assert hits and all(h.layer == 1 and h.polarity == "-" and (h.score or 0) >= 0.2 for h in hits)
    sims = [h.similarity for h in hits]
    assert sims == sorted(sims, reverse=True)
    with pytest.raises(neurodbg.NeurodbgError, match="empty"):
        search.search("   ")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NEURODBG, *args], capture_output=True, text=True, timeout=300)


def test_cli_search_and_bad_input(described: Path, tmp_path: Path) -> None:
    out = _cli("search", "numbers and digits", "--atlas", str(described), "--k", "5", "--json")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert len(hits) == 5 and {"id", "similarity", "score", "text"} <= set(hits[0])
    cases = [
        (("search", "", "--atlas", str(described)), "empty"),
        (("describe", "--atlas", str(tmp_path / "nowhere")), "no atlas"),
        (("describe", "--atlas", str(described), "--explainer", "gpt-magic"), "unknown explainer"),
        (("describe", "--atlas", str(described), "--layers", "7"), "not in this atlas"),
        (("describe", "--atlas", str(described), "--explainer", "openai:some-model",
          "--api-base", "http://127.0.0.1:9/v1", "--layers", "0", "--neurons", "0-3"), "cannot reach"),
    ]
    for args, message in cases:
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, result.stderr)


def test_describe_on_an_atlas_without_a_scan(tmp_path: Path) -> None:
    AtlasStore.open(tmp_path / "empty", create=True).close()
    result = _cli("describe", "--atlas", str(tmp_path / "empty"))
    assert result.returncode == 2 and "no scan" in result.stderr


# -- LLM explainers: a real OpenAI-compatible server on loopback, and the local model ---------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def serve(default_model: neurodbg.Model):
    """`transformers serve` with the embedded model, offline, on a free loopback port."""
    import os
    import time
    import urllib.request

    port = _free_port()
    model_dir = default_model.source if Path(default_model.source).is_dir() else None
    if model_dir is None:
        from neurodbg.models import catalogue, provision

        model_dir = str(provision.cached_dir(catalogue.lookup("default")))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("transformers")), "serve", model_dir, "--port",
                             str(port), "--host", "127.0.0.1", "--device", "cpu"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/models", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError("transformers serve did not start")
        yield base, model_dir
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_openai_compatible_explainer_against_a_real_server(described: Path, serve) -> None:
    base, model_id = serve
    result = _cli("describe", "--atlas", str(described), "--explainer", f"openai:{model_id}", "--api-base", base,
                  "--layers", "0", "--neurons", "3", "--polarity", "+", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["described"] == 1
    store = AtlasStore.open(described)
    found = [e for e in descriptions.for_neuron(store, 0, 3, "+") if e.explainer == f"openai:{model_id}"]
    assert len(found) == 1 and found[0].text and found[0].score is not None
    assert found[0].simulator.startswith("llm-all-at-once:")
    stat = [e for e in descriptions.for_neuron(store, 0, 3, "+") if e.explainer == "stat"]
    assert len(stat) == 1    # earlier descriptions are kept next to the new ones


def _http_server(handler_body):
    """A real HTTP server on loopback whose POST handler runs `handler_body(self)`."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            handler_body(self)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_endpoints_that_answer_garbage_or_hang(described: Path) -> None:
    import time

    def garbage(h) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.end_headers()
        h.wfile.write(b"hello, I am not an LLM")

    def hang(h) -> None:
        time.sleep(5)

    store = AtlasStore.open(described)
    before = descriptions.count(store)
    for body, message, extra in ((garbage, "not an OpenAI chat completion", ()), (hang, "did not answer within",
                                                                                    ("--timeout", "1"))):
        server = _http_server(body)
        try:
            result = _cli("describe", "--atlas", str(described), "--explainer", "openai:x", "--api-base",
                          f"http://127.0.0.1:{server.server_address[1]}/v1", "--layers", "1", "--neurons", "0-2",
                          *extra)
        finally:
            server.shutdown()
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert descriptions.count(store) == before


def test_local_explainer_draws_scored_candidates(described: Path, default_model: neurodbg.Model) -> None:
    from neurodbg.describe.chat_backends import LocalChat
    from neurodbg.describe.llm_explainer import LLMExplainer
    from neurodbg.describe.llm_simulator import LLMSimulator

    store = AtlasStore.open(described)
    reader = ExemplarReader(store)
    bg = background(store, default_model.tokenizer, reader)
    explainer = LLMExplainer(LocalChat(default_model), bg.decode, candidates=2)
    simulator = LLMSimulator(default_model, bg.decode)
    summary = describe(store, explainer, simulator, reader=reader, layers=[1], neurons=[7], polarities=("-",),
                       progress=False)
    assert summary.described == 1
    found = [e for e in descriptions.for_neuron(store, 1, 7, "-") if e.explainer == explainer.name]
    assert [e.candidate for e in sorted(found, key=lambda e: e.candidate)] == [0, 1]
    assert all(e.score is not None and -1 <= e.score <= 1 for e in found)
    ex = reader.build(1, 7, "-", dict(reader.layer(1, {7}))[7])
    values = simulator.simulate(found[0], ex.scoring[:2])
    assert all(len(v) == len(e.ids) and (v >= 0).all() and (v <= 10).all() for v, e in zip(values, ex.scoring,
                                                                                             strict=False))
