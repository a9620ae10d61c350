"""The Monitor engine on the real default model, checked against independent
computations: finite differences, manual hooks, the model's own logits."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import neurodbg
from neurodbg.analyze.atlas_view import AtlasView
from neurodbg.analyze.clusters import cluster
from neurodbg.analyze.logit_lens import lens_logits, logit_lens
from neurodbg.analyze.monitor import Monitor
from neurodbg.analyze.neurons_behind import activations_and_grads, attribution
from neurodbg.analyze.patching import patch_sweep
from neurodbg.analyze.prompt import prepare, single_token
from neurodbg.analyze.steering import SteeringSpec, resolve
from neurodbg.analyze.vectors import mean_difference
from neurodbg.atlas import AtlasStore

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))
QUESTION = "Which is bigger, 9.11 or 9.9?"


def test_attribution_gradients_agree_with_finite_differences(default_model: neurodbg.Model) -> None:
    """float64 copy of the model; central differences with eps 1e-2. The model's RMSNorm computes
    in float32 whatever the dtype, which puts a ~1e-5 noise floor on log-probs, so the neurons
    checked are ones with sizeable gradients: the largest at three positions and the top attributed."""
    model = neurodbg.Model(copy.deepcopy(default_model.module).double(), default_model.tokenizer, name="f64")
    p = prepare(model, QUESTION)
    pos, target = p.length - 1, single_token(model, "9")
    values, grads, _ = activations_and_grads(model, p, pos, target)
    layers = model.module.model.layers
    picks = []
    for at in (pos, pos - 3, 4):
        flat = torch.stack([g[at] for g in grads]).abs().flatten()
        layer, neuron = divmod(int(flat.argmax()), grads[0].shape[1])
        picks.append((layer, neuron, at))
    top = attribution(model, p, pos, target, top=1).findings[0]
    picks.append((top.layer, top.neuron, top.position))
    for layer, neuron, at in picks:
        def logprob(delta: float, layer: int = layer, neuron: int = neuron, at: int = at) -> float:
            def hook(_m: torch.nn.Module, args: tuple) -> tuple:
                x = args[0].clone()
                x[0, at, neuron] += delta
                return (x,)
            handle = layers[layer].mlp.down_proj.register_forward_pre_hook(hook)
            try:
                with torch.no_grad():
                    out = model.module(p.ids).logits[0, pos]
            finally:
                handle.remove()
            return float(torch.log_softmax(out, -1)[target])

        fd = (logprob(1e-2) - logprob(-1e-2)) / 2e-2
        assert grads[layer][at, neuron].item() == pytest.approx(fd, rel=0.03, abs=1e-3), (layer, neuron, at)
    # the attribution of a neuron is the sum over positions of activation x gradient
    expected = float((values[top.layer][:, top.neuron] * grads[top.layer][:, top.neuron]).sum())
    assert top.value == pytest.approx(expected, rel=1e-5)


def test_logit_lens_at_the_last_layer_is_the_models_own_logits(default_model: neurodbg.Model) -> None:
    p = prepare(default_model, QUESTION, chat=True)
    with torch.no_grad():
        plain = default_model.module(p.ids).logits[0].float()
    assert torch.equal(lens_logits(default_model, p)[-1], plain)
    rows = logit_lens(default_model, p, p.length - 1, target=single_token(default_model, "9"))
    assert len(rows) == 30 and all(r.target_rank is not None and r.target_rank >= 1 for r in rows)
    assert rows[-1].top[0][1] == int(plain[-1].argmax())


def test_steering_to_own_value_is_bit_identical(default_model: neurodbg.Model, described_atlas: Path) -> None:
    view = AtlasView(AtlasStore.open(described_atlas), default_model)
    p = prepare(default_model, QUESTION)
    with torch.no_grad(), default_model.trace(capture="layers.1.mlp.act") as tr:
        plain = tr.forward({"input_ids": p.ids}).logits
    at, neuron = 5, 77
    own = float(tr["layers.1.mlp.act"][0, at, neuron])
    q = float(view.quantile(1e-4, "+")[1, neuron])
    spec = SteeringSpec(neurons=[f"L1/N{neuron}+"], value=own / q, tokens=[at])
    edits = resolve(spec, view, default_model)
    with torch.no_grad(), default_model.trace(interventions=edits) as tr2:
        steered = tr2.forward({"input_ids": p.ids}).logits
    assert torch.equal(plain, steered)


@pytest.mark.parametrize("sides", ["selected", "both"])
def test_ablation_through_a_spec_equals_a_manual_hook(default_model: neurodbg.Model, described_atlas: Path,
                                                      sides: str) -> None:
    view = AtlasView(AtlasStore.open(described_atlas), default_model)
    p = prepare(default_model, QUESTION)
    neurons = [(0, 3), (0, 900), (1, 42)]
    spec = SteeringSpec(neurons=[f"L{a}/N{b}" for a, b in neurons], value=0.0, tokens="all", sides=sides)
    with torch.no_grad(), default_model.trace(interventions=resolve(spec, view, default_model)) as tr:
        steered = tr.forward({"input_ids": p.ids}).logits
    layers = default_model.module.model.layers
    handles = []
    negatives = 0
    for layer in (0, 1):
        cols = [n for li, n in neurons if li == layer]

        def zero(_m: torch.nn.Module, args: tuple, cols: list[int] = cols) -> tuple:
            nonlocal negatives
            x = args[0].clone()
            if sides == "both":
                x[..., cols] = 0
            else:        # the selected polarity (+) only: negative activations keep their values
                picked = x[..., cols]
                negatives += int((picked < 0).sum())
                x[..., cols] = torch.where(picked > 0, torch.zeros_like(picked), picked)
            return (x,)
        handles.append(layers[layer].mlp.down_proj.register_forward_pre_hook(zero))
    try:
        with torch.no_grad():
            manual = default_model.module(p.ids).logits
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(steered, manual)
    if sides == "selected":
        assert negatives > 0           # the two ways differ here: the other side was really kept


def test_steer_generates_with_and_without(default_model: neurodbg.Model, described_atlas: Path) -> None:
    monitor = Monitor(default_model, described_atlas)
    from neurodbg.search.atlas_search import AtlasSearch

    edits = monitor.steering(SteeringSpec(query="digits and numbers", k=20, value=0.0))
    hits = AtlasSearch(AtlasStore.open(described_atlas)).search("digits and numbers", 20)
    # each (neuron, polarity) matched is clamped on its own side: a neuron matched in both polarities
    # is clamped on both, and counted once among the neurons touched
    assert edits and sorted((int(e.site.split(".")[1]), n, "+" if e.side == "positive" else "-")
                            for e in edits for n in e.neurons or []) == sorted((h.layer, h.neuron, h.polarity)
                                                                               for h in hits)
    result = monitor.steer(QUESTION, edits, target="9", max_new_tokens=6)
    assert result.touched == len({(h.layer, h.neuron) for h in hits})
    with default_model.trace() as tr:
        plain = tr.generate(prepare(default_model, QUESTION).ids, max_new_tokens=6)
    assert result.baseline_text == default_model.tokenizer.decode(plain[0, result.prompt_tokens:],
                                                                   skip_special_tokens=True)
    assert result.delta_logprob is not None and result.delta_logprob != 0.0


def test_analyze_groups_described_neurons(default_model: neurodbg.Model, described_atlas: Path) -> None:
    monitor = Monitor(default_model, described_atlas)
    analysis = monitor.analyze(QUESTION, target="9", chat=True, mode="attribution", top=3000, threshold=0.6)
    report = analysis.report
    assert len(report.findings) == 3000
    assert all(not analysis.prompt.template[f.position] for f in report.findings)   # template excluded
    described = [f for f in report.findings if f.description]
    assert described and all(f.layer in (0, 1) for f in described)
    for c in analysis.clusters:
        assert len(c.members) >= 3 and -1 <= c.coherence <= 1
        assert c.label in {report.findings[i].description for i in c.members}
    shown = monitor.analyze(QUESTION, target="9", chat=True, mode="attribution", top=3000, threshold=0.6,
                            min_coherence=0.9)
    assert all(c.coherence >= 0.9 for c in shown.clusters)
    assert shown.hidden_clusters == sum(1 for c in analysis.clusters if c.coherence < 0.9)
    with pytest.raises(neurodbg.NeurodbgError, match="between 0 and 1"):
        monitor.analyze(QUESTION, target="9", min_coherence=2.0)
    act = monitor.analyze(QUESTION, target="9", mode="activation", top=50)
    assert act.report.findings and all(f.value > 1 for f in act.report.findings)


def test_clustering_recovers_planted_groups() -> None:
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((3, 16))
    vectors, texts = [], []
    for g, c in enumerate(centres):
        for i in range(5):
            v = c + 0.05 * rng.standard_normal(16)
            vectors.append(v / np.linalg.norm(v))
            texts.append(f"group {g} item {i}")
    vectors.append(np.eye(16)[0])
    texts.append("loner")
    found = cluster(np.array(vectors, dtype=np.float32), texts, threshold=0.3)
    assert sorted(len(c.members) for c in found) == [5, 5, 5]
    for c in found:
        assert len({texts[m].split()[1] for m in c.members}) == 1 and c.coherence > 0.9
        assert not c.spurious and c.baseline is not None and c.baseline < 0.5


def test_cluster_scores_and_spurious_flags() -> None:
    """Coherence and its random baseline against a brute-force loop; a tight group of well-described
    neurons passes, a loose group and a group of badly described neurons are flagged, each for its reason."""
    rng = np.random.default_rng(3)
    dim = 32
    tight = rng.standard_normal(dim)
    vectors = [tight + 0.1 * rng.standard_normal(dim) for _ in range(6)]          # 0-5: one concept
    loose = rng.standard_normal(dim)
    vectors += [loose + 1.5 * rng.standard_normal(dim) for _ in range(6)]         # 6-11: barely alike
    vectors += [rng.standard_normal(dim) for _ in range(20)]                       # 12-31: noise
    vectors = np.array([v / np.linalg.norm(v) for v in vectors], dtype=np.float32)
    texts = [f"n{i}" for i in range(len(vectors))]
    scores = [0.8] * 6 + [0.7] * 6 + [0.1] * 20
    found = cluster(vectors, texts, threshold=0.3, min_size=3, scores=scores)
    by_first = {min(c.members): c for c in found}
    good = by_first[0]
    assert good.members == list(range(6)) and not good.spurious
    pairs = [float(vectors[i] @ vectors[j]) for i in good.members for j in good.members if i != j]
    assert good.coherence == pytest.approx(sum(pairs) / len(pairs), abs=1e-6)
    # the baseline: the same random groups drawn by hand
    from neurodbg.analyze.clusters import RANDOM_DRAWS
    draw = np.random.default_rng(len(good.members))
    brute = []
    for _ in range(RANDOM_DRAWS):
        group = draw.choice(len(vectors), len(good.members), replace=False)
        sims = [float(vectors[i] @ vectors[j]) for i in group for j in group if i != j]
        brute.append(sum(sims) / len(sims))
    assert good.baseline == pytest.approx(float(np.mean(brute)), abs=1e-6)
    data = good.to_dict()
    assert data["spurious"] is False and data["reasons"] == [] and data["baseline"] == round(good.baseline, 4)
    assert found == [good]                                   # noise and the loose group do not cluster at 0.3
    badly = cluster(vectors[:6], texts[:6], threshold=0.3, min_size=3, scores=[0.1] * 6)
    assert badly[0].reasons == ["low_scores"]                # alike descriptions that do not predict the neurons
    flagged = cluster(vectors[6:12], texts[6:12], threshold=2.0, min_size=3, scores=scores[6:12])
    assert len(flagged) == 1 and "low_coherence" in flagged[0].reasons
    unscored = cluster(vectors[:6], texts[:6], threshold=0.3, min_size=3, scores=[None] * 6)
    assert unscored[0].reasons == ["low_scores"]            # a cluster of undescribed neurons means nothing


def test_clusters_hidden_by_coherence_and_rating() -> None:
    from neurodbg.analyze.cluster_labels import rating
    from neurodbg.analyze.clusters import Cluster
    from neurodbg.analyze.monitor import visible

    groups = [Cluster("a", 0.9, [0, 1, 2]), Cluster("b", 0.4, [3, 4, 5]), Cluster("c", 0.8, [6, 7, 8])]
    groups[2].extra["rating"] = 5
    assert [c.label for c in visible(groups, min_coherence=0.5)] == ["a", "c"]
    assert [c.label for c in visible(groups, max_rating=3)] == ["a", "b"]          # unrated clusters stay
    assert [c.label for c in visible(groups, min_coherence=0.0)] == ["a", "b", "c"]
    for bad in ({"min_coherence": 1.5}, {"min_coherence": -0.1}, {"max_rating": 0}, {"max_rating": 8}):
        with pytest.raises(neurodbg.NeurodbgError, match="between"):
            visible(groups, **bad)
    assert rating("3") == 3 and rating("I'd say 2 out of 7.") == 2 and rating("none") is None


def test_patching_the_last_residual_restores_everything(default_model: neurodbg.Model) -> None:
    clean = prepare(default_model, "The capital of France is")
    corrupted = prepare(default_model, "The capital of Italy is")
    result = patch_sweep(default_model, clean, corrupted, single_token(default_model, " Paris"),
                         single_token(default_model, " Rome"), sites="layers.28-29.resid_out")
    assert result.clean > result.corrupted
    assert float(result.restored[-1, 0]) == pytest.approx(1.0, abs=1e-5)


def test_bad_input_in_python(default_model: neurodbg.Model, described_atlas: Path) -> None:
    monitor = Monitor(default_model, described_atlas)
    with pytest.raises(neurodbg.NeurodbgError, match="tokens"):
        monitor.analyze(QUESTION, target=" bigger than")
    with pytest.raises(neurodbg.NeurodbgError, match="outside the prompt"):
        monitor.analyze(QUESTION, target="9", position=500)
    with pytest.raises(neurodbg.NeurodbgError, match="no described neuron matches"):
        monitor.steering(SteeringSpec(query="anything", min_score=1.5))
    with pytest.raises(neurodbg.NeurodbgError, match="at least one prompt"):
        mean_difference(default_model, "layers.3.resid_out", [], ["x"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NEURODBG, *args], capture_output=True, text=True, timeout=600)


def test_cli(described_atlas: Path, tmp_path: Path) -> None:
    out = _cli("analyze", QUESTION, "--target", "9", "--atlas", str(described_atlas), "--chat", "--top", "30",
               "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["target_token"] == "9" and len(data["neurons"]) == 30 and "clusters" in data
    assert data["hidden_clusters"] == 0 and all("spurious" in c and "baseline" in c for c in data["clusters"])
    out = _cli("analyze", QUESTION, "--target", "9", "--atlas", str(described_atlas), "--min-coherence", "1.5")
    assert out.returncode == 2 and "between 0 and 1" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    spec = tmp_path / "spec.json"
    out = _cli("steer", QUESTION, "--atlas", str(described_atlas), "--query", "digits and numbers", "--k", "10",
               "--value", "0", "--target", "9", "--max-new-tokens", "4", "--save", str(spec), "--json")
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)
    assert 0 < first["neurons"] <= 10 and first["delta_logprob"] is not None
    again = _cli("steer", QUESTION, "--replay", str(spec), "--target", "9", "--max-new-tokens", "4", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["steered_logprob"] == first["steered_logprob"]
    lens_png = tmp_path / "lens.png"
    out = _cli("lens", QUESTION, "--target", "9", "--png", str(lens_png), "--json")
    assert out.returncode == 0 and lens_png.stat().st_size > 1000, out.stderr
    att_png = tmp_path / "att.png"
    out = _cli("attention", QUESTION, "--layer", "0", "--layer", "5", "--png", str(att_png), "--json")
    assert out.returncode == 0 and att_png.stat().st_size > 1000, out.stderr
    assert set(json.loads(out.stdout)["layers"]) == {"0", "5"}


def test_cli_bad_input(described_atlas: Path, tmp_path: Path) -> None:
    from scan_fixtures import save_tiny

    tiny = save_tiny(neurodbg.load_model(progress=False).tokenizer, tmp_path / "tiny")
    cases = [
        (("analyze", QUESTION, "--target", " bigger than"), "tokens"),
        (("analyze", QUESTION, "--target", "9", "--position", "99"), "outside the prompt"),
        (("analyze", QUESTION, "--mode", "magic"), "unknown mode"),
        (("analyze", QUESTION, "--atlas", str(described_atlas), "--model", str(tiny)), "different"),
        (("steer", QUESTION, "--atlas", str(described_atlas), "--query", "x", "--min-score", "1.5"), "matches"),
        (("steer", QUESTION, "--atlas", str(described_atlas)), "name what to steer"),
        (("steer", QUESTION, "--replay", str(tmp_path / "missing.json")), "cannot read"),
        (("lens", QUESTION, "--target", " not one token"), "tokens"),
        (("attention", QUESTION, "--layer", "99"), "no layer"),
        (("patch", "a b", "a b c", "--answer", " x", "--foil", " y"), "same number of tokens"),
    ]
    for args, message in cases:
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, result.stderr)


def test_token_view_during_generation(default_model: neurodbg.Model) -> None:
    monitor = Monitor(default_model)
    positions, start = monitor.generate(QUESTION, chat=True, k=3, max_new_tokens=5)
    prompt = prepare(default_model, QUESTION, chat=True)
    with default_model.trace() as tr:
        plain = tr.generate(prompt.ids, max_new_tokens=5)
    assert start == prompt.length and len(positions) == plain.shape[1]
    for i in range(start - 1, plain.shape[1] - 1):       # greedy: each next token is the top-1 there
        assert positions[i].top[0][1] == int(plain[0, i + 1])
    assert [p.template for p in positions[start:]] == [False] * 5


def test_llm_cluster_labels_through_a_chat_backend(default_model: neurodbg.Model) -> None:
    from neurodbg.analyze.cluster_labels import chat_backend, llm_labels
    from neurodbg.analyze.clusters import Cluster
    from neurodbg.describe.chat_backends import LocalChat

    texts = ["Fires on digits such as 1", "Fires on digits such as 7", "Fires on numbers like 42"]
    clusters = [Cluster("Fires on digits such as 1", 0.9, [0, 1, 2])]
    llm_labels(clusters, texts, LocalChat(default_model, max_new_tokens=12))
    assert isinstance(clusters[0].extra["llm_label"], str) and clusters[0].extra["llm_label"]
    assert clusters[0].extra["rating"] is None or 1 <= clusters[0].extra["rating"] <= 7
    with pytest.raises(neurodbg.NeurodbgError, match="unknown label backend"):
        chat_backend("gpt")
