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
            assert shown.isdisjoint(e.seq_index for e in ex.scoring)      # held-out and random alike
            assert {e.seq_index for e in ex.contrast}.isdisjoint(e.seq_index for e in ex.scoring)
            assert len(ex.shown) <= 10 and len(ex.held_out) == 10 and len(ex.held_out_random) == 10


def test_score_is_pearson_over_held_out_tokens(described: Path, default_model: neurodbg.Model) -> None:
    """Recompute a stored score independently: evaluate the stored additive model position by
    position with hand-written lookups (forms, classes and position buckets worked out here from
    the tokenizer) and correlate with the stored activations via numpy."""
    from neurodbg.describe.token_classes import token_class

    tok = default_model.tokenizer
    store = AtlasStore.open(described)
    reader = ExemplarReader(store)

    def bucket(position: int) -> int:       # 1 | 2 | 3 | 4-7 | 8-15 | 16+
        return 0 if position < 2 else 1 if position < 3 else 2 if position < 4 else 3 if position < 8 else (
            4 if position < 16 else 5)

    checked = 0
    for neuron, by_kind in list(reader.layer(1))[:40:7]:
        ex = reader.build(1, neuron, "+", by_kind)
        stored = descriptions.for_neuron(store, 1, neuron, "+")[0]
        spec = stored.spec
        assert spec is not None and spec["model"] == "linear-context"
        preds, trues = [], []
        for e in ex.scoring:
            for pos in range(e.start, len(e.ids)):
                text = tok.decode([int(e.ids[pos])])
                p = spec["bias"] + spec["tokens"].get(str(int(e.ids[pos])), 0.0)
                p += spec["forms"].get(text.strip().lower(), 0.0)
                p += spec["classes"].get(token_class(text) or "other", 0.0)
                p += spec["positions"][bucket(pos)]
                if pos > 0:
                    p += spec["after"].get(tok.decode([int(e.ids[pos - 1])]).strip().lower(), 0.0)
                preds.append(p)
                trues.append(float(e.acts[pos]))
        expected = np.corrcoef(preds, trues)[0, 1] if np.std(preds) > 0 else None
        if expected is None:
            assert stored.score is None
        else:
            assert stored.score == pytest.approx(expected, abs=1e-6)
            checked += 1
    assert checked >= 3


def test_the_model_is_fitted_on_shown_and_contrast_only(described: Path, default_model: neurodbg.Model) -> None:
    """The description of a neuron-polarity does not change when its scoring sequences change:
    refit with every held-out and random activation replaced by noise and the spec is identical."""
    from dataclasses import replace

    store = AtlasStore.open(described)
    reader = ExemplarReader(store)
    explainer, _ = make("stat", background(store, default_model.tokenizer, reader))
    rng = np.random.default_rng(0)
    for neuron, by_kind in list(reader.layer(1))[:30:6]:
        for polarity in "+-":
            ex = reader.build(1, neuron, polarity, by_kind)
            scoring = {e.seq_index for e in ex.scoring}
            assert ex.contrast and scoring.isdisjoint(e.seq_index for e in ex.contrast + ex.shown)
            noisy = replace(ex, held_out=[replace(e, acts=rng.standard_normal(len(e.acts)).astype(np.float32))
                                          for e in ex.held_out],
                            held_out_random=[replace(e, acts=rng.standard_normal(len(e.acts)).astype(np.float32))
                                             for e in ex.held_out_random])
            assert explainer.explain(noisy)[0].spec == explainer.explain(ex)[0].spec


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


def test_detection_and_fuzzing_scores_against_sklearn(described: Path, default_model: neurodbg.Model) -> None:
    """The stored detection and fuzzing figures equal sklearn's AUROC and balanced accuracy over labels
    and evidence built here by hand; the shuffled figures are those of the previous neuron's stored
    description simulated on this neuron's held-out excerpts."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from neurodbg.describe.detection import STRONG

    store = AtlasStore.open(described)
    reader = ExemplarReader(store)
    _, simulator = make("stat", background(store, default_model.tokenizer, reader))
    stored = dict(descriptions.all_scores(store, "stat"))
    assert len(stored) == 2 * 1536 * 2
    rows = list(reader.layer(1))
    checked = 0
    for (neuron, by_kind), (previous, _) in zip(rows[5:60:9], rows[4:60:9], strict=True):
        ex = reader.build(1, neuron, "+", by_kind)
        mine = descriptions.for_neuron(store, 1, neuron, "+")[0]
        scores = stored[(1, neuron, "+")]
        preds = simulator.simulate(mine, ex.scoring)
        peaks = np.array([e.acts[1:].max() for e in ex.scoring])
        labels = peaks >= STRONG * peaks.max()
        evidence = np.array([p[1:].max() for p in preds])
        if labels.all() or not labels.any():
            continue
        assert scores["detection"]["auroc"] == pytest.approx(roc_auc_score(labels, evidence), abs=1e-4)
        said = evidence > (evidence.min() + evidence.max()) / 2
        assert scores["detection"]["balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(labels, said), abs=1e-4)
        assert scores["simulation"] == pytest.approx(mine.score, abs=1e-9)
        fuzz = scores["fuzzing"]["auroc"]
        assert fuzz is None or 0.0 <= fuzz <= 1.0
        other = descriptions.for_neuron(store, 1, previous, "+")[0]
        shuffled = score(simulator.simulate(other, ex.scoring), ex.scoring)
        assert scores["shuffled"]["simulation"] == (None if shuffled is None else pytest.approx(shuffled, abs=1e-9))
        checked += 1
    assert checked >= 3
    # read against the shuffled baseline, the descriptions mean something
    sims = [s["simulation"] for s in stored.values() if s["simulation"] is not None]
    base = [s["shuffled"]["simulation"] for s in stored.values() if s["shuffled"] and s["shuffled"]["simulation"]
            is not None]
    assert np.median(sims) > np.median(base) + 0.2
    det = [s["detection"]["auroc"] for s in stored.values() if s["detection"]["auroc"] is not None]
    det_base = [s["shuffled"]["detection"]["auroc"] for s in stored.values()
                if s["shuffled"] and s["shuffled"]["detection"]["auroc"] is not None]
    assert np.median(det) > np.median(det_base)


def test_an_unknown_scoring_method_is_refused(described: Path) -> None:
    from neurodbg.describe.runner import describe_atlas

    with pytest.raises(neurodbg.NeurodbgError, match="unknown scoring method 'telepathy'"):
        describe_atlas(described, scoring=["simulation", "telepathy"], progress=False)
    out = _cli("describe", "--atlas", str(described), "--scoring", "detection,telepathy")
    assert out.returncode == 2 and "unknown scoring method" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
