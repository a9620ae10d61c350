"""GPT-NeoX (Pythia): a neuron is one coordinate after the MLP activation."""

from neurodbg.sites.adapter import Adapter, register

GPT_NEOX = register(Adapter(
    family="gpt_neox",
    model_types=("gpt_neox",),
    layers="layers",
    embed="embed_in",
    final_norm="final_layer_norm",
    logits=("embed_out",),
    per_layer={
        "resid_in": ("", "input", 0),
        "attn.out": ("attention", "output", 0),
        "attn.pattern": ("attention", "output", 1),
        "mlp.in": ("mlp", "input", 0),
        "mlp.act": ("mlp.dense_4h_to_h", "input", 0),
        "mlp.out": ("mlp", "output", 0),
        "resid_out": ("", "output", 0),
    },
    neuron_writer="mlp.dense_4h_to_h",
    neuron_note="input of mlp.dense_4h_to_h: act(dense_h_to_4h(x))",
))
