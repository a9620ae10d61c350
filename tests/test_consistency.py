"""Self-consistency on the real default model: seeded sampling is reproducible and equals
transformers' `generate` with the same settings, answers and votes are exact, the fork's
probabilities equal a direct forward pass, and its neurons equal the Monitor's attribution
for the majority's token minus the minority's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import neurodbg
from neurodbg.analyze.consistency import consistency, extractor, sample, vote
from neurodbg.analyze.neurons_behind import attribution
from neurodbg.analyze.prompt import Prompt, prepare
from neurodbg.analyze.sampling import Sampling
from neurodbg.errors import NeurodbgError

QUESTION = "What is 345 * 678? Answer with the number."


def test_seeded_sampling_equals_generate(default_model: neurodbg.Model) -> None:
    prompt = prepare(default_model, QUESTION, chat=True)
    settings = Sampling(temperature=0.8, top_k=40, top_p=0.9, seed=3)
    first = sample(default_model, prompt, 4, settings, max_new_tokens=8)
    assert torch.equal(first, sample(default_model, prompt, 4, settings, max_new_tokens=8))
    torch.manual_seed(3)
    tok = default_model.tokenizer
    direct = default_model.module.generate(prompt.ids, attention_mask=torch.ones_like(prompt.ids), do_sample=True,
                                           temperature=0.8, top_k=40, top_p=0.9, num_return_sequences=4,
                                           max_new_tokens=8, pad_token_id=tok.pad_token_id)
    assert torch.equal(first, direct)
    assert not torch.equal(first, sample(default_model, prompt, 4, Sampling(0.8, 40, 0.9, seed=4), max_new_tokens=8))


def test_extraction_and_votes() -> None:
    number, choice, regex = extractor("number"), extractor("choice"), extractor(r"regex:is (\w+)")
    assert number("345 * 678 = 233,910.") == "233910" and number("no digits") is None
    assert number("it is -3.5") == "-3.5"
    assert choice("I think (B) is right, not A") == "B" and choice("Because") is None
    assert regex("the colour is red") == "red"
    assert extractor("regex:[0-9]+")("abc 42 7") == "42"
    winner, counts, agreement, entropy = vote(["4", "4", "5", None])
    assert (winner, counts, agreement) == ("4", {"4": 2, "5": 1, "none": 1}, 0.5)
    assert entropy == pytest.approx(1.5)
    assert vote(["7"] * 5)[2:] == (1.0, 0.0)
    for bad in ("words", "regex:(", ""):
        with pytest.raises(NeurodbgError):
            extractor(bad)


def test_consistency_and_its_fork(default_model: neurodbg.Model) -> None:
    result = consistency(default_model, QUESTION, samples=6, chat=True, max_new_tokens=12, fork_neurons=5)
    assert result.mode == "sampled" and len(result.answers) == len(result.texts) == 6
    assert sum(result.votes.values()) == 6
    assert result.agreement == pytest.approx(result.votes[result.vote] / 6, abs=1e-6)
    fork = result.fork
    assert fork is not None and sum(b["samples"] for b in fork.branches) <= 6 and len(fork.branches) >= 2
    prompt = prepare(default_model, QUESTION, chat=True)
    again = consistency(default_model, QUESTION, samples=6, chat=True, max_new_tokens=12, fork_neurons=0)
    assert again.texts == result.texts                                     # the same seed, the same samples
    prefix = torch.tensor([prompt.ids[0].tolist() + default_model.tokenizer.encode(fork.prefix,
                                                                                   add_special_tokens=False)])
    if prefix.shape[1] == fork.position:        # the shared text re-encodes to the same tokens
        with torch.no_grad():
            probs = torch.softmax(default_model.module(prefix).logits[0, -1].float(), -1)
        for branch in fork.branches:
            assert branch["probability"] == pytest.approx(float(probs[branch["id"]]), abs=1e-5)
    # the fork's neurons: attribution for the majority's token minus the minority's, neuron by neuron
    pre = Prompt(prefix, default_model.tokens(prefix[0]), prompt.template + [False] * (prefix.shape[1] - prompt.length))
    everyone = default_model.n_layers * 1536
    major = {f.id[:-1]: f.value for f in attribution(default_model, pre, pre.length - 1, fork.branches[0]["id"],
                                                     top=everyone).findings}
    minor = {f.id[:-1]: f.value for f in attribution(default_model, pre, pre.length - 1, fork.branches[1]["id"],
                                                     top=everyone).findings}
    for neuron in fork.neurons:
        assert neuron["value"] == pytest.approx(major[neuron["id"]] - minor[neuron["id"]], abs=1e-4)


def test_triage(default_model: neurodbg.Model) -> None:
    direct = consistency(default_model, "2 + 2 =", samples=4, max_new_tokens=2, triage=1e-9)
    assert direct.mode == "direct" and len(direct.answers) == 1 and 0 < direct.confidence <= 1
    sampled = consistency(default_model, QUESTION, chat=True, samples=3, max_new_tokens=6, triage=1.0, fork_neurons=0)
    assert sampled.mode == "sampled" and sampled.confidence < 1.0 and len(sampled.answers) == 3
    with pytest.raises(NeurodbgError, match="triage threshold"):
        consistency(default_model, QUESTION, triage=1.5)
    with pytest.raises(NeurodbgError, match="samples must be between"):
        consistency(default_model, QUESTION, samples=0)
    with pytest.raises(NeurodbgError, match="temperature"):
        consistency(default_model, QUESTION, sampling=Sampling(temperature=0.0))


def test_cli_consistency() -> None:
    command = str(Path(sys.executable).with_name("neurodbg"))
    done = subprocess.run([command, "consistency", QUESTION, "--chat", "--samples", "3", "--max-new-tokens", "10",
                           "--json"], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {"answers", "vote", "agreement", "entropy", "fork"} <= set(out) and len(out["answers"]) == 3
    bad = subprocess.run([command, "consistency", QUESTION, "--extract", "words"], capture_output=True, text=True,
                         timeout=300, check=False)
    assert bad.returncode == 2 and "unknown extract mode" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_cli_tokens_generates_by_sampling_as_generate_does(default_model) -> None:
    command = str(Path(sys.executable).with_name("neurodbg"))
    done = subprocess.run([command, "tokens", "Once upon a time", "--generate", "8", "--sample", "--temperature",
                           "0.9", "--seed", "3", "--json"], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    prompt = prepare(default_model, "Once upon a time")
    expected = sample(default_model, prompt, 1, Sampling(temperature=0.9, seed=3), max_new_tokens=8)[0]
    assert out["generated_from"] == prompt.length
    assert [p["token"] for p in out["positions"]] == default_model.tokens(expected)
    bad = subprocess.run([command, "tokens", "hi", "--generate", "2", "--sample", "--top-p", "0"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2 and "top_p" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
