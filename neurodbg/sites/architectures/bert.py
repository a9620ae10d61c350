"""BERT-style post-LayerNorm encoders: a neuron is one coordinate of the
intermediate activation. attn.out and mlp.out are the dense projections before
the residual add and LayerNorm."""

from neurodbg.sites.adapter import Adapter, register

BERT = register(Adapter(
    family="bert",
    model_types=("bert", "roberta", "xlm-roberta"),
    layers="encoder.layer",
    embed="embeddings.word_embeddings",
    final_norm=None,
    logits=("cls.predictions.decoder", "lm_head.decoder"),
    per_layer={
        "resid_in": ("", "input", 0),
        "attn.out": ("attention.output.dense", "output", 0),
        "attn.pattern": ("attention.self", "output", 1),
        "mlp.in": ("intermediate", "input", 0),
        "mlp.act": ("intermediate", "output", 0),
        "mlp.out": ("output.dense", "output", 0),
        "resid_out": ("", "output", 0),
    },
    neuron_writer="output.dense",
    neuron_note="output of intermediate: act(dense(x))",
))
