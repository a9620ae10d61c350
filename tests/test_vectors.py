"""Steering vectors on the real default model, checked against hand-made hooks: the
mean difference of last-token activations, and a sweep whose every point equals
generation with the vector added by a plain forward hook; `neurodbg vector` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import neurodbg
from neurodbg.analyze.prompt import prepare, single_token
from neurodbg.analyze.vectors import mean_difference, sweep

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))
SITE, LAYER = "layers.10.resid_out", 10
POSITIVE, NEGATIVE = ["I love this, it is wonderful"], ["I hate this, it is awful"]
PROMPT, TARGET = "The movie was", " great"


def _last_resid(model: neurodbg.Model, text: str) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    layer = model.module.model.layers[LAYER]
    handle = layer.register_forward_hook(lambda _m, _a, out: seen.append((out[0] if isinstance(out, tuple)
                                                                         else out)[0, -1].detach().clone()))
    try:
        with torch.no_grad():
            model.module(model.encode(text))
    finally:
        handle.remove()
    return seen[0].float()


def _generate_with(model: neurodbg.Model, vector: torch.Tensor, strength: float, ids: torch.Tensor,
                   max_new_tokens: int) -> tuple[str, float]:
    """Greedy text and log p(TARGET) with strength x vector added to layer 10's output by a plain hook."""
    def hook(_m: torch.nn.Module, _a: tuple, out: object) -> object:
        if isinstance(out, tuple):
            return (out[0] + strength * vector.to(out[0].dtype), *out[1:])
        return out + strength * vector.to(out.dtype)       # type: ignore[operator]

    handle = model.module.model.layers[LAYER].register_forward_hook(hook)
    try:
        with torch.no_grad():
            out = model.module.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                        do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
            logits = model.module(ids).logits[0, -1].float()
    finally:
        handle.remove()
    text = model.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    return text, float(torch.log_softmax(logits, -1)[single_token(model, TARGET)])


def test_mean_difference_is_the_difference_of_last_token_activations(default_model: neurodbg.Model) -> None:
    vec = mean_difference(default_model, SITE, [*POSITIVE, "What a delight"], NEGATIVE)
    want = (_last_resid(default_model, POSITIVE[0]) + _last_resid(default_model, "What a delight")) / 2 \
        - _last_resid(default_model, NEGATIVE[0])
    assert torch.equal(vec, want)


def test_each_sweep_point_equals_a_hand_made_hook(default_model: neurodbg.Model) -> None:
    vec = mean_difference(default_model, SITE, POSITIVE, NEGATIVE)
    prompt = prepare(default_model, PROMPT)
    points = sweep(default_model, prompt, SITE, vec, [0.0, 4.0, 8.0], target=single_token(default_model, TARGET),
                   max_new_tokens=8)
    assert [p.strength for p in points] == [0.0, 4.0, 8.0]
    for point in points:
        text, logprob = _generate_with(default_model, vec, point.strength, prompt.ids, 8)
        assert point.text == text
        assert point.target_logprob == pytest.approx(logprob, abs=1e-5)
    assert points[0].text != points[2].text          # the vector does something at strength 8


def test_cli_vector(tmp_path: Path) -> None:
    out = subprocess.run([NEURODBG, "vector", PROMPT, "--positive", POSITIVE[0], "--negative", NEGATIVE[0],
                          "--site", SITE, "--strength", "0", "--strength", "8", "--target", TARGET,
                          "--max-new-tokens", "8", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    model = neurodbg.load_model(progress=False)
    vec = mean_difference(model, SITE, POSITIVE, NEGATIVE)
    assert data["site"] == SITE and data["norm"] == pytest.approx(float(vec.norm()), rel=1e-6)
    prompt = prepare(model, PROMPT)
    for point in data["points"]:
        text, logprob = _generate_with(model, vec, point["strength"], prompt.ids, 8)
        assert point["text"] == text and point["target_logprob"] == pytest.approx(logprob, abs=1e-5)
    bad = subprocess.run([NEURODBG, "vector", PROMPT, "--positive", "a", "--negative", "b", "--strength", "inf"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "finite" in bad.stderr, bad.stderr
