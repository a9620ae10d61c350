"""Llama-style decoders with a gated MLP: a neuron is one coordinate of the
input of down_proj, i.e. act(gate(x)) * up(x)."""

from neurodbg.sites.adapter import Adapter, register

LLAMA = register(Adapter(
    family="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "smollm3", "olmo2"),
    layers="layers",
    embed="embed_tokens",
    final_norm="norm",
    logits=("lm_head",),
    per_layer={
        "resid_in": ("", "input", 0),
        "attn.out": ("self_attn", "output", 0),
        "attn.pattern": ("self_attn", "output", 1),
        "mlp.in": ("mlp", "input", 0),
        "mlp.act": ("mlp.down_proj", "input", 0),
        "mlp.out": ("mlp", "output", 0),
        "resid_out": ("", "output", 0),
    },
    neuron_writer="mlp.down_proj",
    neuron_note="input of mlp.down_proj: act(gate_proj(x)) * up_proj(x)",
))
