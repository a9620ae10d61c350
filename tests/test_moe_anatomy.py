"""Mixture-of-experts anatomy: total and active parameters per token, exact from a config
alone (Mixtral-8x7B's public config), and on tiny random models of each MoE family
checked against a brute-force count — the parameters one token's backward pass reaches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from neurodbg.inspect.memory import activation_elements_per_token_layer
from neurodbg.inspect.params import count_from_config, count_module, load_config
from neurodbg.inspect.shapes import shapes_of

DATA = Path(__file__).parent / "data"
TINY = {"vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 64}


def tiny_moe(name: str) -> tuple[torch.nn.Module, int, int]:
    """(a random model, experts, experts per token)."""
    if name == "mixtral":
        config = transformers.MixtralConfig(**TINY, intermediate_size=48, num_local_experts=6, num_experts_per_tok=2)
    elif name == "qwen2_moe":       # with a shared expert
        config = transformers.Qwen2MoeConfig(**TINY, intermediate_size=96, moe_intermediate_size=32, num_experts=8,
                                             num_experts_per_tok=2, shared_expert_intermediate_size=40)
    elif name == "qwen3_moe":
        config = transformers.Qwen3MoeConfig(**TINY, head_dim=16, intermediate_size=96, moe_intermediate_size=32,
                                             num_experts=8, num_experts_per_tok=3)
    elif name == "olmoe":
        config = transformers.OlmoeConfig(**TINY, intermediate_size=32, num_experts=8, num_experts_per_tok=2)
    else:
        raise KeyError(name)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    experts = getattr(config, "num_local_experts", None) or config.num_experts
    return model, experts, config.num_experts_per_tok


def reached_by_one_token(model: torch.nn.Module) -> int:
    """Parameters a single token's output depends on: every parameter, less the routed experts'
    weight slices that get no gradient from its logits."""
    model.zero_grad()
    model(torch.tensor([[5]])).logits.sum().backward()
    unused = 0
    for name, p in model.named_parameters():
        if ".experts." in name and p.dim() >= 3:            # fused: [experts, ...]
            grad = torch.zeros_like(p) if p.grad is None else p.grad
            unused += sum(p[e].numel() for e in range(p.shape[0]) if not grad[e].any())
    return sum(p.numel() for p in model.parameters()) - unused


def test_mixtral_8x7b_from_its_config_alone() -> None:
    count = count_from_config(DATA / "mixtral-8x7b-config.json")
    assert count.total == 46_702_792_704 and count.active_params == 12_879_925_248
    assert count.to_dict()["moe"] == {"layers": 32, "experts": 8, "top_k": 2, "expert_params": 45_097_156_608}


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"])
def test_active_parameters_equal_what_one_token_reaches(name: str) -> None:
    model, experts, top_k = tiny_moe(name)
    count = count_module(model)
    assert len(count.moe) == 2 and {(m.experts, m.top_k) for m in count.moe} == {(experts, top_k)}
    assert count.active_params < count.total == sum(p.numel() for p in model.parameters())
    assert count.active_params == reached_by_one_token(model)


def test_dense_models_report_every_parameter_active(default_model) -> None:
    count = count_module(default_model.module)
    assert count.moe == [] and count.active_params == count.total
    assert count.to_dict()["active_params"] == count.to_dict()["total_params"]


def test_memory_bills_count_every_expert_stored_and_routed_experts_computed() -> None:
    s = shapes_of(load_config(DATA / "mixtral-8x7b-config.json"))
    assert s.moe_intermediate == 2 * 14336 and s.token_intermediate == 28672
    dense = shapes_of(transformers.MistralConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                                 num_attention_heads=32, num_key_value_heads=8, vocab_size=32000))
    # an MoE token's MLP keeps its two experts' intermediates: twice a dense layer's of the same width
    assert activation_elements_per_token_layer(s) - activation_elements_per_token_layer(dense) == 4 * 14336
    q = shapes_of(transformers.Qwen2MoeConfig(hidden_size=64, moe_intermediate_size=32, num_experts=8,
                                              num_experts_per_tok=2, shared_expert_intermediate_size=40))
    assert q.token_intermediate == 2 * 32 + 40


def test_cli_inspect_moe_config() -> None:
    command = str(Path(sys.executable).with_name("neurodbg"))
    done = subprocess.run([command, "inspect", "--model", str(DATA / "mixtral-8x7b-config.json"), "--json"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["total_params"], out["active_params"]) == (46_702_792_704, 12_879_925_248)
    weights = next(line for line in out["memory"]["training"]["lines"] if line["item"] == "weights")
    assert weights["bytes"] == 46_702_792_704 * 2                     # every expert is stored
