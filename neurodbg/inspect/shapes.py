"""Architecture facts a memory bill needs, read from a transformers config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UNFUSED_ACTIVATIONS = {"gelu_new", "gelu_fast", "gelu_python", "quick_gelu"}


@dataclass(frozen=True)
class Shapes:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    gated_mlp: bool
    activation: str = ""
    moe_intermediate: int | None = None   # MoE: MLP width a token goes through (k experts + shared)

    @property
    def token_intermediate(self) -> int:
        """The MLP intermediates one token has: its k experts' (and a shared expert's) in a MoE."""
        return self.intermediate if self.moe_intermediate is None else self.moe_intermediate

    @property
    def activation_saves(self) -> int:
        """Intermediate-sized tensors one MLP activation keeps for backward: built-in
        kernels keep their input; tanh-approximated GELUs written as separate Python
        ops (gelu_new, gelu_fast, gelu_python) keep about four."""
        return 4 if self.activation in UNFUSED_ACTIVATIONS else 1

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def _first(config: Any, *names: str, default: int | None = None) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    if default is None:
        raise AttributeError(f"config lacks all of {names}")
    return default


def shapes_of(config: Any) -> Shapes:
    config = getattr(config, "text_config", None) or config
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    heads = _first(config, "num_attention_heads", "n_head")
    head_dim = _first(config, "head_dim", default=hidden // heads)
    act = str(getattr(config, "hidden_act", getattr(config, "activation_function", "")))
    gated = getattr(config, "model_type", "") in {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2",
                                                   "gemma3_text", "smollm3", "olmo2", "mixtral", "qwen2_moe"} \
        or (act in {"silu", "swiglu", "geglu"} and "gpt" not in getattr(config, "model_type", ""))
    return Shapes(
        layers=_first(config, "num_hidden_layers", "n_layer", "num_layers"),
        hidden=hidden,
        intermediate=_first(config, "intermediate_size", "n_inner", "ffn_dim", default=4 * hidden),
        heads=heads,
        kv_heads=_first(config, "num_key_value_heads", default=heads),
        head_dim=head_dim,
        vocab=_first(config, "vocab_size"),
        gated_mlp=gated,
        activation=act,
        moe_intermediate=_moe_width(config),
    )


def _moe_width(config: Any) -> int | None:
    """k routed experts' intermediate width plus a shared expert's, for a MoE config; else None."""
    experts = _first(config, "num_local_experts", "num_experts", "n_routed_experts", default=0)
    k = _first(config, "num_experts_per_tok", "moe_topk", "num_selected_experts", default=0)
    if experts <= 1 or k <= 0:
        return None
    width = _first(config, "moe_intermediate_size", "intermediate_size", "ffn_dim")
    shared = _first(config, "shared_expert_intermediate_size", default=0) or \
        _first(config, "n_shared_experts", "num_shared_experts", default=0) * width
    return k * width + shared
