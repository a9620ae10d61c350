"""Mixture-of-experts decoders (transformers 5 layout): Mixtral, Qwen2-MoE, Qwen3-MoE,
OLMoE. The dense sites keep the llama names; the MLP is a sparse block whose router
(`mlp.gate`) returns (logits, top-k weights, top-k expert indices) for every token,
and whose routed experts are fused in one module (`mlp.experts`). Qwen2-MoE adds a
shared expert, a gated MLP every token goes through.

    layers.{i}.router.logits    [tokens x experts] the router's scores before the softmax
    layers.{i}.router.weights   [tokens x k] the routing weights of the chosen experts
    layers.{i}.router.experts   [tokens x k] the chosen experts' indices
    layers.{i}.experts.{e}.act  routed expert e's neurons [tokens x intermediate], zero at tokens
                                not routed to it (computed beside the fused experts: `trace.expert_sites`)
    layers.{i}.shared.act       the shared expert's neurons (Qwen2-MoE)

The router returns them flattened over the batch ([batch x tokens, ...]); traces see
them per token like every other site (`Site.flat_tokens`)."""

from dataclasses import replace

from neurodbg.sites.adapter import register
from neurodbg.sites.architectures.llama import LLAMA

# the llama layout, with the dense MLP's neurons replaced by the router's outputs
_DENSE = {name: where for name, where in LLAMA.per_layer.items() if name != "mlp.act"}

MOE = register(replace(
    LLAMA,
    family="moe",
    model_types=("mixtral", "qwen2_moe", "qwen3_moe", "olmoe"),
    per_layer={
        **_DENSE,
        "router.logits": ("mlp.gate", "output", 0),
        "router.weights": ("mlp.gate", "output", 1),
        "router.experts": ("mlp.gate", "output", 2),
        "shared.act": ("mlp.shared_expert.down_proj", "input", 0),
    },
    neuron_writer="",
    neuron_note="routed experts are fused in mlp.experts: their neurons are layers.{i}.experts.{e}.act; the "
                "router's sites are layers.{i}.router.*",
    experts="mlp.experts",
))
