"""GPT-2: a neuron is one coordinate after the MLP activation (input of c_proj)."""

from neurodbg.sites.adapter import Adapter, register

GPT2 = register(Adapter(
    family="gpt2",
    model_types=("gpt2",),
    layers="h",
    embed="wte",
    final_norm="ln_f",
    logits=("lm_head",),
    per_layer={
        "resid_in": ("", "input", 0),
        "attn.out": ("attn", "output", 0),
        "attn.pattern": ("attn", "output", 1),
        "mlp.in": ("mlp", "input", 0),
        "mlp.act": ("mlp.c_proj", "input", 0),
        "mlp.out": ("mlp", "output", 0),
        "resid_out": ("", "output", 0),
    },
    neuron_writer="mlp.c_proj",
    neuron_note="input of mlp.c_proj: act(c_fc(x))",
))
