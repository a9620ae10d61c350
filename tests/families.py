"""Tiny random-initialised models, one per supported architecture family, and an
independent recomputation of each family's MLP neurons from its own modules."""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers
from torch import nn

COMMON = {"vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
          "intermediate_size": 96, "max_position_embeddings": 64}


def _config(name: str) -> transformers.PretrainedConfig:
    if name == "llama":
        return transformers.LlamaConfig(**COMMON, num_key_value_heads=2)
    if name == "mistral":
        return transformers.MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=16)
    if name == "qwen2":
        return transformers.Qwen2Config(**COMMON, num_key_value_heads=2)
    if name == "qwen3":
        return transformers.Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=16)
    if name == "gemma":
        return transformers.GemmaConfig(**COMMON, num_key_value_heads=2, head_dim=16)
    if name == "gemma2":
        return transformers.Gemma2Config(**COMMON, num_key_value_heads=2, head_dim=16)
    if name == "gpt2":
        return transformers.GPT2Config(vocab_size=128, n_embd=64, n_layer=3, n_head=4, n_positions=64)
    if name == "gpt_neox":
        return transformers.GPTNeoXConfig(**COMMON)
    if name == "bert":
        return transformers.BertConfig(**COMMON)
    raise KeyError(name)


FAMILY_OF = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "gemma": "llama",
             "gemma2": "llama", "gpt2": "gpt2", "gpt_neox": "gpt_neox", "bert": "bert"}
ARCHS = list(FAMILY_OF)


def tiny_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = _config(name)
    cls = transformers.AutoModelForMaskedLM if name == "bert" else transformers.AutoModelForCausalLM
    model = cls.from_config(config)
    return model.eval()


def layer(model: nn.Module, i: int) -> nn.Module:
    for path, module in model.named_modules():
        if path.endswith((f"layers.{i}", f"h.{i}", f"layer.{i}")) and not path.endswith(f".{i}.{i}"):
            return module
    raise KeyError(i)


def mlp_parts(model: nn.Module, name: str, i: int) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """(the module whose input is the MLP input, recompute MLP neurons from that input)."""
    block = layer(model, i)
    family = FAMILY_OF[name]
    if family == "llama":
        mlp = block.mlp
        return mlp, lambda x: mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
    if family == "gpt2":
        mlp = block.mlp
        return mlp, lambda x: mlp.act(mlp.c_fc(x))
    if family == "gpt_neox":
        mlp = block.mlp
        return mlp, lambda x: mlp.act(mlp.dense_h_to_4h(x))
    inter = block.intermediate
    return inter, lambda x: inter.intermediate_act_fn(inter.dense(x))


def logits_of(output: object) -> torch.Tensor:
    logits = getattr(output, "logits", None)
    assert isinstance(logits, torch.Tensor)
    return logits
