"""Fidelity on the real embedded default model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import pytest
import torch

import neurodbg
from neurodbg import Model

PROMPT = "Which is bigger, 9.11 or 9.9?"
STORY = "Once upon a time, in a small village by the sea,"


def _plain_logits(model: Model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.module(ids).logits


def test_anatomy(default_model: Model) -> None:
    assert default_model.family == "llama"
    assert default_model.n_layers == 30
    assert len(default_model.resolve("layers.*.mlp.act")) == 30
    assert sum(p.numel() for p in default_model.module.parameters()) == 134_515_008


def test_untouched_trace_is_bit_identical(default_model: Model) -> None:
    ids = default_model.encode(PROMPT)
    plain = _plain_logits(default_model, ids)
    sites = [s for s in default_model.sites if not s.endswith("attn.pattern")]
    tr = default_model.run(PROMPT, capture=sites)
    assert torch.equal(tr.logits, plain)
    assert torch.equal(tr["logits"], plain)
    assert tr["layers.29.mlp.act"].shape == (1, ids.shape[1], 1536)


def test_mlp_act_is_down_proj_input(default_model: Model) -> None:
    layer = default_model.module.model.layers[5]
    seen: dict[str, torch.Tensor] = {}
    handles = [layer.mlp.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach())),
               layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("act", a[0].detach()))]
    try:
        tr = default_model.run(PROMPT, capture="layers.5.mlp.act")
    finally:
        for h in handles:
            h.remove()
    mlp = layer.mlp
    with torch.no_grad():
        recomputed = mlp.act_fn(mlp.gate_proj(seen["x"])) * mlp.up_proj(seen["x"])
    assert torch.equal(tr["layers.5.mlp.act"], seen["act"])
    assert torch.equal(tr["layers.5.mlp.act"], recomputed)


def test_ablating_neuron_7_changes_only_coordinate_7_at_named_tokens(default_model: Model) -> None:
    layer = default_model.module.model.layers[5]
    seen: list[torch.Tensor] = []
    # a forward hook sees the input down_proj actually received, after any pre-hook edits
    handle = layer.mlp.down_proj.register_forward_hook(lambda m, a, out: seen.append(a[0].detach().clone()))
    try:
        default_model.run(PROMPT)
        default_model.run(PROMPT, interventions=[{"op": "ablate", "site": "layers.5.mlp.act", "neurons": [7],
                                                  "tokens": [1, 4]}])
    finally:
        handle.remove()
    before, after = seen
    diff = (before != after).nonzero().tolist()
    assert diff == [[0, 1, 7], [0, 4, 7]]
    assert after[0, 1, 7] == 0 and after[0, 4, 7] == 0


def test_generation_positions_and_generated_tokens(default_model: Model) -> None:
    with default_model.trace(capture="layers.3.mlp.act") as tr:
        plain = tr.generate(STORY, max_new_tokens=6)
    acts = tr["layers.3.mlp.act"]
    # prefill + one step per generated token except the last
    assert acts.shape[1] == plain.shape[1] - 1
    site = "layers.3.mlp.act"
    iv = {"op": "set", "site": site, "neurons": [11], "value": 42.0, "tokens": "generated"}
    with default_model.trace(capture=site, interventions=[iv]) as tr2:
        tr2.generate(STORY, max_new_tokens=6)
    edited = tr2[site]
    prompt_len = default_model.encode(STORY).shape[1]
    assert torch.equal(edited[0, :prompt_len], acts[0, :prompt_len])
    assert bool((edited[0, prompt_len:, 11] == 42.0).all())
    assert edited.shape[1] > prompt_len


def test_generation_untouched_matches_plain_generate(default_model: Model) -> None:
    ids = default_model.encode(STORY)
    with torch.no_grad():
        plain = default_model.module.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                              do_sample=False, pad_token_id=default_model.tokenizer.pad_token_id)
    with default_model.trace(capture="layers.*.mlp.act", reduce="max") as tr:
        traced = tr.generate(STORY, max_new_tokens=8)
    assert traced.shape[1] == ids.shape[1] + 8
    assert torch.equal(plain, traced)
    assert tr["layers.0.mlp.act"].shape == (1, 1536)


def test_attention_pattern_capture(default_model: Model) -> None:
    tr = default_model.run(PROMPT, capture="layers.2.attn.pattern")
    pattern = tr["layers.2.attn.pattern"]
    n = default_model.encode(PROMPT).shape[1]
    assert pattern.shape == (1, 9, n, n)
    assert torch.allclose(pattern.sum(-1), torch.ones(1, 9, n), atol=1e-5)
    assert torch.all(pattern.triu(1) == 0)  # causal
    # an independent eager run with output_attentions gives the same weights
    module = default_model.module
    before = module.config._attn_implementation
    module.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = module(default_model.encode(PROMPT), output_attentions=True)
    finally:
        module.set_attn_implementation(before)
    assert torch.allclose(out.attentions[2], pattern, atol=1e-6)
    assert module.config._attn_implementation == before  # the trace restored it too


def test_attention_pattern_is_not_editable(default_model: Model) -> None:
    with pytest.raises(neurodbg.InterventionError, match=r"can be captured"):
        default_model.run(PROMPT, interventions=[{"op": "ablate", "site": "layers.2.attn.pattern"}])


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt(default_model: Model, prompt: str) -> None:
    with pytest.raises(neurodbg.PromptError):
        default_model.run(prompt)


def test_overlong_prompt(default_model: Model) -> None:
    with pytest.raises(neurodbg.PromptError, match="at most 8192"):
        default_model.encode("hello " * 9000)


def test_token_out_of_range(default_model: Model) -> None:
    iv = {"op": "ablate", "site": "layers.1.mlp.act", "tokens": [400]}
    with pytest.raises(neurodbg.NeuronIndexError, match="token position 400"):
        default_model.run(PROMPT, interventions=[iv])
