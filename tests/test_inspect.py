"""Library-level tests of neurodbg.inspect: parameter counts, module tree,
memory bills (checked against measured autograd saves) and tokenizer facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from neurodbg.errors import ConfigError, NeurodbgError
from neurodbg.inspect import (
    build_tree,
    count_from_config,
    count_module,
    inference_bill,
    load_config,
    measure_saved_bytes,
    probe_shapes,
    render_lines,
    shapes_of,
    tokenizer_facts,
    training_bill,
)
from neurodbg.inspect.tokenizer_facts import sample_text

LLAMA3_CONFIG = Path(__file__).resolve().parent / "data" / "llama3-8b-config.json"
hf_logging.set_verbosity_error()


def gpt2_config(**kw: object) -> GPT2Config:
    return GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64, **kw)


def llama_config(layers: int = 3) -> LlamaConfig:
    return LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=layers, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=100, max_position_embeddings=128)


def tiny(cls: type[nn.Module], config: object) -> nn.Module:
    torch.manual_seed(0)
    return cls(config).float().eval()


def line(bill, item: str) -> int:
    [found] = [x.bytes for x in bill.lines if x.item == item]
    return found


# -- parameter counts ------------------------------------------------------------------------

def test_count_from_config_llama3_8b():
    raw = json.loads(LLAMA3_CONFIG.read_text())
    h, i, n, v = raw["hidden_size"], raw["intermediate_size"], raw["num_hidden_layers"], raw["vocab_size"]
    kv = h // raw["num_attention_heads"] * raw["num_key_value_heads"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h  # q,o + k,v + gate,up,down + two RMSNorms
    by_hand = n * per_layer + 2 * v * h + h                # untied embed + lm_head, final norm
    count = count_from_config(LLAMA3_CONFIG)
    assert by_hand == 8_030_261_248
    assert count.total == by_hand
    assert count.trainable == by_hand
    assert count.tied is False
    assert sum(count.by_group.values()) == by_hand


def test_count_module_tiny_gpt2_matches_hand_formula():
    cfg = gpt2_config()
    d, n_layer, vocab, pos = cfg.n_embd, cfg.n_layer, cfg.vocab_size, cfg.n_positions
    per_block = (2 * d                      # ln_1
                 + d * 3 * d + 3 * d        # c_attn
                 + d * d + d                # attn c_proj
                 + 2 * d                    # ln_2
                 + d * 4 * d + 4 * d        # mlp c_fc
                 + 4 * d * d + d)           # mlp c_proj
    by_hand = vocab * d + pos * d + n_layer * per_block + 2 * d  # wte (tied to lm_head), wpe, blocks, ln_f
    assert by_hand == 110_592
    model = tiny(GPT2LMHeadModel, cfg)
    count = count_module(model)
    assert count.total == by_hand
    assert count.tied is True
    assert count.trainable == by_hand
    assert sum(count.by_group.values()) == by_hand
    model.transformer.wpe.weight.requires_grad_(False)
    assert count_module(model).trainable == by_hand - pos * d


def test_count_module_untied_gpt2_counts_lm_head():
    cfg = gpt2_config(tie_word_embeddings=False)
    count = count_module(tiny(GPT2LMHeadModel, cfg))
    assert count.tied is False
    assert count.total == 110_592 + cfg.vocab_size * cfg.n_embd


# -- module tree and shapes ------------------------------------------------------------------

def _child(node, *names: str):
    for name in names:
        [node] = [c for c in node.children if c.name == name]
    return node


def test_build_tree_collapses_identical_layers():
    model = tiny(LlamaForCausalLM, llama_config(layers=3))
    ids = torch.randint(0, 100, (1, 7))
    tree = build_tree(model, probe_shapes(model, ids))
    layers = _child(tree, "model", "layers")
    assert [(c.name, c.repeat) for c in layers.children] == [("0", 3)]
    assert layers.params == sum(p.numel() for p in model.model.layers.parameters())
    assert layers.children[0].params * 3 == layers.params
    assert any("0-2 (x3)" in text for text in render_lines(tree))

    gpt2 = tiny(GPT2LMHeadModel, gpt2_config())
    h = _child(build_tree(gpt2), "transformer", "h")
    assert [(c.name, c.repeat) for c in h.children] == [("0", 2)]


def test_build_tree_keeps_different_layers_apart():
    model = tiny(LlamaForCausalLM, llama_config(layers=3))
    model.model.layers[1].mlp.act_fn = nn.GELU()
    layers = _child(build_tree(model), "model", "layers")
    assert [(c.name, c.repeat) for c in layers.children] == [("0", 1), ("1", 1), ("2", 1)]


def test_probe_shapes_decoder_layer():
    cfg = llama_config()
    model = tiny(LlamaForCausalLM, cfg)
    ids = torch.randint(0, 100, (1, 9))
    shapes = probe_shapes(model, ids)
    for i in range(cfg.num_hidden_layers):
        assert shapes[f"model.layers.{i}"] == [1, 9, cfg.hidden_size]
    assert shapes["model.layers.0.mlp.gate_proj"] == [1, 9, cfg.intermediate_size]
    assert shapes["lm_head"] == [1, 9, cfg.vocab_size]
    # the probe leaves no hooks behind
    assert all(not m._forward_hooks for m in model.modules())
    layer0 = _child(build_tree(model, shapes), "model", "layers", "0")
    assert layer0.shape == [1, 9, cfg.hidden_size]


# -- memory bills ----------------------------------------------------------------------------

# The activation line counts, per decoder layer, the tensors autograd keeps for backward.
# ±35% covers what that per-layer formula leaves out or rounds: embedding output, the final
# norm and the lm_head input, RMSNorm's float32 statistics, rotary cos/sin, the attention
# kernel's logsumexp and mask, and storages shared between saved tensors. Measured ratios
# (estimate/measured) on these models are 0.87-0.92; a missing or doubled MLP/attention term
# moves the ratio by far more than the tolerance.
ACT_TOLERANCE = 0.35

MEASURED_CASES = [
    pytest.param(LlamaForCausalLM, llama_config(layers=2), id="llama"),
    pytest.param(GPT2LMHeadModel, gpt2_config(activation_function="gelu_pytorch_tanh"), id="gpt2-fused-gelu"),
    pytest.param(GPT2LMHeadModel, gpt2_config(), id="gpt2-gelu_new"),
]


@pytest.mark.parametrize(("cls", "config"), MEASURED_CASES)
@pytest.mark.parametrize(("batch", "seq"), [(1, 16), (2, 32)])
def test_activation_estimate_matches_measured_saves(cls, config, batch: int, seq: int):
    model = tiny(cls, config)
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    with torch.enable_grad():
        measured = measure_saved_bytes(model, input_ids=ids)
    bill = training_bill(count_module(model).total, shapes_of(config), batch=batch, seq=seq, dtype="float32")
    estimate = line(bill, "activations")
    assert measured > 0
    assert abs(estimate - measured) <= ACT_TOLERANCE * measured, (estimate, measured, estimate / measured)


def test_measure_saved_bytes_scales_with_tokens():
    model = tiny(LlamaForCausalLM, llama_config(layers=2))
    with torch.enable_grad():
        short = measure_saved_bytes(model, input_ids=torch.randint(0, 100, (1, 16)))
        long = measure_saved_bytes(model, input_ids=torch.randint(0, 100, (1, 64)))
    assert 3.0 < long / short < 5.0


def test_bills_add_up_from_their_lines():
    n = count_from_config(LLAMA3_CONFIG).total
    s = shapes_of(load_config(LLAMA3_CONFIG))
    assert (s.layers, s.hidden, s.intermediate, s.kv_dim, s.vocab, s.gated_mlp) == (32, 4096, 14336, 1024, 128256, True)
    batch, seq = 2, 1024
    inf = inference_bill(n, s, batch=batch, seq=seq, dtype="bfloat16")
    assert line(inf, "weights") == 2 * n
    assert line(inf, "kv cache") == 2 * 32 * 1024 * batch * seq * 2
    assert line(inf, "logits") == batch * seq * 128256 * 4
    assert inf.total == sum(x.bytes for x in inf.lines)
    assert inf.to_dict()["total_bytes"] == sum(x["bytes"] for x in inf.to_dict()["lines"])
    assert inf.assumptions

    tr = training_bill(n, s, batch=batch, seq=seq, dtype="bfloat16", optimizer="adamw")
    expected = (2 * n + 2 * n + 4 * n + 8 * n             # weights, grads, fp32 master, adam moments
                + line(tr, "activations") + batch * seq * 128256 * 4 * 2)
    assert tr.total == expected
    assert tr.to_dict()["total_bytes"] == sum(x["bytes"] for x in tr.to_dict()["lines"])
    assert line(tr, "float32 master weights") == 4 * n

    fp32 = training_bill(n, s, batch=batch, seq=seq, dtype="float32", optimizer="adamw")
    assert "float32 master weights" not in [x.item for x in fp32.lines]
    assert line(fp32, "activations") == 2 * line(tr, "activations")

    ckpt = training_bill(n, s, batch=batch, seq=seq, dtype="bfloat16", checkpointing=True)
    assert 0 < line(ckpt, "activations") < line(tr, "activations") / 4


@pytest.mark.parametrize(("optimizer", "per_param"), [("adamw", 8), ("AdamW", 8), ("adam", 8), ("sgd", 0),
                                                      ("sgd-momentum", 4)])
def test_optimizer_state_bytes(optimizer: str, per_param: int):
    s = shapes_of(llama_config())
    n = 1_234_567
    bill = training_bill(n, s, batch=1, seq=8, dtype="float32", optimizer=optimizer)
    [state] = [x.bytes for x in bill.lines if x.item.startswith("optimizer state")]
    assert state == per_param * n


def test_unknown_optimizer_and_dtype_raise():
    s = shapes_of(llama_config())
    with pytest.raises(NeurodbgError, match="lion9"):
        training_bill(1000, s, batch=1, seq=8, optimizer="lion9")
    with pytest.raises(NeurodbgError, match="float13"):
        training_bill(1000, s, batch=1, seq=8, dtype="float13")
    with pytest.raises(NeurodbgError, match="float13"):
        inference_bill(1000, s, batch=1, seq=8, dtype="float13")


def test_bad_configs_raise_config_error(tmp_path: Path):
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama", ')
    with pytest.raises(ConfigError):
        count_from_config(bad)
    bad.write_text(json.dumps({"model_type": "frobnicator9000"}))
    with pytest.raises(ConfigError, match="frobnicator9000"):
        count_from_config(tmp_path)
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.json")
    assert issubclass(ConfigError, NeurodbgError)


# -- tokenizer facts -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(request: pytest.FixtureRequest):
    try:
        return request.getfixturevalue("default_model")  # the suite's shared session fixture, when present
    except pytest.FixtureLookupError:
        import neurodbg

        return neurodbg.load_model("default", progress=False)


@pytest.mark.slow
def test_tokenizer_facts_default_model(model):
    tok = model.tokenizer
    facts = tokenizer_facts(tok)
    text = sample_text()
    ids = tok.backend_tokenizer.encode(text, add_special_tokens=False).ids  # the Rust tokenizer, directly
    assert facts.vocab_size == 49152
    assert facts.text_chars == len(text) > 1000
    assert facts.text_tokens == len(ids)
    assert facts.chars_per_token == pytest.approx(len(text) / len(ids), abs=1e-3)
    assert facts.chars_per_token > 1
    assert facts.special_tokens.get("eos_token")


@pytest.mark.slow
def test_tokenizer_facts_on_given_text(model):
    text = "Größenwahn and naïveté: déjà vu in Zürich, 42 times. " * 20
    facts = tokenizer_facts(model.tokenizer, text)
    ids = model.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
    assert facts.text_chars == len(text)
    assert facts.chars_per_token == pytest.approx(len(text) / len(ids), abs=1e-3)
    assert facts.bytes_per_token == pytest.approx(len(text.encode()) / len(ids), abs=1e-3)
    assert facts.bytes_per_token > facts.chars_per_token  # non-ASCII letters take two bytes
