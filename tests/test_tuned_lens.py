"""The tuned lens on the real default model: identity translators are the logit lens bit
for bit, the last layer is the model's own logits, held-out KL equals a computation from
Hugging Face's own hidden states, training improves it without touching the model, and a
lens for another model, a missing or corrupt file is one clear error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import neurodbg
from neurodbg.analyze.logit_lens import lens_logits
from neurodbg.analyze.monitor import Monitor
from neurodbg.analyze.prompt import prepare
from neurodbg.analyze.tuned_lens import TunedLens, lens_for, load_tuned_lens
from neurodbg.analyze.tuned_lens_training import LensEvaluation, corpus_windows, evaluate_lens
from neurodbg.errors import ExportError, TunedLensError, TunedLensMismatchError

PROMPT = "The capital of France is Paris, and the capital of Italy is"
COMMAND = str(Path(sys.executable).with_name("neurodbg"))


@pytest.fixture(scope="module")
def lens(default_lens: Path, default_model: neurodbg.Model) -> TunedLens:
    return load_tuned_lens(default_lens, default_model)


def test_identity_translators_are_the_logit_lens_bit_for_bit(default_model: neurodbg.Model) -> None:
    p = prepare(default_model, PROMPT)
    identity = TunedLens.identity(default_model)
    assert torch.equal(lens_logits(default_model, p), lens_logits(default_model, p, identity))
    monitor = Monitor(default_model)
    plain = monitor.lens_view(PROMPT).to_dict()
    through = monitor.lens_view(PROMPT, tuned=identity).to_dict()
    assert plain.pop("lens") == "logit" and through.pop("lens") == "tuned" and plain == through


def test_the_tuned_lens_at_the_last_layer_is_the_models_own_logits(default_model: neurodbg.Model,
                                                                  lens: TunedLens) -> None:
    p = prepare(default_model, PROMPT)
    with torch.no_grad():
        plain = default_model.module(p.ids).logits[0].float()
    tuned = lens_logits(default_model, p, lens)
    assert torch.equal(tuned[-1], plain)
    assert not torch.equal(tuned[0], lens_logits(default_model, p)[0])       # the trained layers do translate
    assert torch.count_nonzero(lens.weights[-1]) == 0 and torch.count_nonzero(lens.biases[-1]) == 0


def test_held_out_kl_equals_a_computation_from_hugging_faces_hidden_states(default_model: neurodbg.Model,
                                                                          lens: TunedLens) -> None:
    _, held = corpus_windows(default_model, "default", seq_len=32, train=1, held_out=2)
    ours = evaluate_lens(default_model, lens, held, batch=2)
    hf = default_model.module
    logit, tuned = np.zeros(default_model.n_layers), np.zeros(default_model.n_layers)
    with torch.no_grad():
        out = hf(torch.tensor(held), output_hidden_states=True)
        p = torch.log_softmax(out.logits.double(), -1)
        for layer in range(default_model.n_layers - 1):
            h = out.hidden_states[layer + 1].double()               # [0] is the embeddings
            for i, translated in enumerate((h, h + h @ lens.weights[layer].double().T + lens.biases[layer].double())):
                q = torch.log_softmax(hf.lm_head(hf.model.norm(translated.float())).double(), -1)
                kl = float((p.exp() * (p - q)).sum(-1).mean())
                (logit if i == 0 else tuned)[layer] = kl
    assert ours.tokens == 64
    np.testing.assert_allclose(ours.logit_kl[:-1], logit[:-1], rtol=1e-4)
    np.testing.assert_allclose(ours.tuned_kl[:-1], tuned[:-1], rtol=1e-4)
    assert ours.logit_kl[-1] == pytest.approx(0, abs=1e-5) and ours.tuned_kl[-1] == pytest.approx(0, abs=1e-5)


def test_training_lowers_held_out_kl_and_leaves_the_model_alone(default_model: neurodbg.Model,
                                                                lens: TunedLens) -> None:
    info = lens.info
    assert info["train_tokens"] == 128 and info["steps"] == 1 and info["corpus"] == "default"
    ev = LensEvaluation.from_dict(info["evaluation"])
    assert ev.tokens == 128 and len(ev.logit_kl) == default_model.n_layers
    # one step moves every translator towards the final distribution on text it never saw
    assert np.mean(ev.tuned_kl[:-1]) < np.mean(ev.logit_kl[:-1])
    fresh = neurodbg.load_model("default", progress=False)
    for (name, a), (_, b) in zip(default_model.module.named_parameters(), fresh.module.named_parameters(),
                                 strict=True):
        assert torch.equal(a, b) and a.requires_grad == b.requires_grad, name


def test_lens_files_are_checked(default_model: neurodbg.Model, default_lens: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from families import tiny_model

    tiny = neurodbg.Model(tiny_model("llama"), name="tiny-llama")
    other = TunedLens.identity(tiny).save(tmp_path / "tiny.safetensors")
    with pytest.raises(TunedLensMismatchError, match="trained for another model: tiny-llama"):
        load_tuned_lens(other, default_model)
    with pytest.raises(TunedLensError, match="no tuned lens at"):
        load_tuned_lens(tmp_path / "missing.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(default_lens.read_bytes()[:1000])
    with pytest.raises(TunedLensError, match="not a readable tuned lens"):
        load_tuned_lens(broken)
    monkeypatch.setenv("NEURODBG_HOME", str(tmp_path / "home"))
    with pytest.raises(TunedLensError, match="no tuned lens has been trained"):
        lens_for(default_model)
    # a save that fails leaves the file it would have replaced as it was, and nothing beside it
    before = other.read_bytes()
    monkeypatch.setattr("neurodbg.atlas.export.os.fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(ExportError, match="nothing was left there"):
        load_tuned_lens(default_lens).save(other)
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.safetensors", "tiny.safetensors"]


def test_cli_train_lens_and_lens_tuned(default_lens: Path, tmp_path: Path) -> None:
    out = tmp_path / "lens.safetensors"
    done = subprocess.run([COMMAND, "train-lens", "--tokens", "64", "--seq-len", "32", "--eval-tokens", "32",
                           "--out", str(out), "--json"], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["path"] == str(out) and report["train_tokens"] == 64 and report["steps"] == 1
    assert [r["layer"] for r in report["evaluation"]["layers"]] == list(range(30))
    assert load_tuned_lens(out).info["evaluation"] == report["evaluation"]

    shown = subprocess.run([COMMAND, "lens", PROMPT, "--lens-file", str(default_lens), "--json"],
                           capture_output=True, text=True, timeout=600, check=False)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["lens"] == "tuned"
    from families import tiny_model

    other = TunedLens.identity(neurodbg.Model(tiny_model("llama"), name="tiny-llama")).save(tmp_path / "tiny.st")
    refused = subprocess.run([COMMAND, "lens", PROMPT, "--lens-file", str(other)], capture_output=True, text=True,
                             timeout=600, check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "trained for another model: tiny-llama" in refused.stderr
