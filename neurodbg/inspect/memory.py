"""A memory bill for running or training a model: what each part costs and why.

Every figure is an estimate under the assumptions listed with it; the
activation estimate counts the tensors autograd keeps for backward in one
decoder layer and is checked in the tests against a measurement of the real
saved tensors (`measure_saved_bytes`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from neurodbg.errors import NeurodbgError
from neurodbg.inspect.shapes import Shapes

DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2,
               "int8": 1, "float8": 1, "fp8": 1}

# Optimizer state in bytes per parameter (states are kept in float32).
OPTIMIZERS = {
    "adamw": (8, "two float32 moments (m, v)"),
    "adam": (8, "two float32 moments (m, v)"),
    "sgd": (0, "no state (plain SGD)"),
    "sgd-momentum": (4, "one float32 momentum buffer"),
    "adafactor": (0, "factored second moments: rows + columns, negligible beside the weights"),
    "adamw-8bit": (2, "two 8-bit moments (bitsandbytes-style)"),
}


@dataclass
class BillLine:
    item: str
    bytes: int
    note: str


@dataclass
class MemoryBill:
    mode: str
    lines: list[BillLine] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(line.bytes for line in self.lines)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "total_bytes": self.total,
                "lines": [{"item": x.item, "bytes": x.bytes, "note": x.note} for x in self.lines],
                "assumptions": self.assumptions}


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype.lower()]
    except KeyError:
        raise NeurodbgError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}") from None


def activation_elements_per_token_layer(s: Shapes) -> int:
    """Elements autograd saves per token in one decoder layer (sdpa/flash attention)."""
    attention = (2 * s.hidden          # pre-norm input and normed input shared by q, k, v
                 + 2 * s.hidden + 2 * s.kv_dim   # q, k, v and attention output kept by the kernel
                 + s.hidden)           # o_proj input
    # gated: gate and up outputs, the activation's saves, the product (down_proj input);
    # plain: fc output's activation saves and the projection input
    mlp_width = (3 + s.activation_saves) if s.gated_mlp else (1 + s.activation_saves)
    mlp = 2 * s.hidden + mlp_width * s.token_intermediate
    return attention + mlp


def _moe_note(s: Shapes) -> list[str]:
    if s.moe_intermediate is None:
        return []
    return [f"mixture of experts: weights (and gradients, optimizer state) for every expert; activations for "
            f"the experts a token is routed to ({s.moe_intermediate:,} MLP intermediates per token, every layer "
            f"counted as MoE)"]


def inference_bill(n_params: int, s: Shapes, *, batch: int, seq: int, dtype: str = "float32") -> MemoryBill:
    b = dtype_bytes(dtype)
    bill = MemoryBill("inference")
    bill.lines.append(BillLine("weights", n_params * b, f"{n_params:,} parameters x {b} bytes ({dtype})"))
    kv = 2 * s.layers * s.kv_dim * batch * seq * b
    bill.lines.append(BillLine("kv cache", kv, f"2 x {s.layers} layers x {s.kv_dim} kv dims x {batch}x{seq} tokens"))
    work = batch * seq * (2 * s.hidden + 3 * s.token_intermediate) * b
    bill.lines.append(BillLine("working activations", work, "one layer's live tensors at a time (no grad)"))
    logits = batch * seq * s.vocab * 4
    bill.lines.append(BillLine("logits", logits, f"{batch}x{seq} positions x {s.vocab} vocab in float32"))
    bill.assumptions += [
        "weights stored in the given dtype; no quantisation",
        "attention by a fused kernel (sdpa/flash): no seq x seq score matrix is kept",
        "logits for every position (generation needs only the last: divide that line by seq)",
        *_moe_note(s),
        "framework overhead (CUDA context ~0.3-1 GB, allocator fragmentation) not included",
    ]
    return bill


def training_bill(n_params: int, s: Shapes, *, batch: int, seq: int, dtype: str = "bfloat16",
                  optimizer: str = "adamw", checkpointing: bool = False) -> MemoryBill:
    b = dtype_bytes(dtype)
    opt = optimizer.lower()
    if opt not in OPTIMIZERS:
        raise NeurodbgError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    bill = MemoryBill("training")
    bill.lines.append(BillLine("weights", n_params * b, f"{n_params:,} parameters x {b} bytes ({dtype})"))
    bill.lines.append(BillLine("gradients", n_params * b, f"one gradient per parameter in {dtype}"))
    if b < 4:
        bill.lines.append(BillLine("float32 master weights", n_params * 4, "mixed precision keeps an fp32 copy"))
    per_param, what = OPTIMIZERS[opt]
    bill.lines.append(BillLine(f"optimizer state ({opt})", n_params * per_param, what))
    per_layer = activation_elements_per_token_layer(s)
    layers_saved = 1 if checkpointing else s.layers
    acts = batch * seq * per_layer * layers_saved * b
    if checkpointing:
        acts += batch * seq * s.hidden * s.layers * b  # each layer's input is kept
    note = (f"{per_layer:,} elements per token per layer x {layers_saved} layer(s) x {batch}x{seq} tokens"
            + (" + layer inputs (checkpointing)" if checkpointing else ""))
    bill.lines.append(BillLine("activations", acts, note))
    logits = batch * seq * s.vocab * 4 * 2
    bill.lines.append(BillLine("logits and their gradient", logits, "float32 logits and softmax gradient"))
    bill.assumptions += [
        f"weights, gradients and activations in {dtype}" + ("; optimizer states in float32" if per_param else ""),
        "attention by a fused kernel (sdpa/flash): no seq x seq score matrix is kept",
        *_moe_note(s),
        "activations: tensors autograd saves for backward (norm inputs, projections' inputs, attention "
        "q/k/v/output, MLP intermediates); dropout masks off",
        "no sharding (ZeRO/FSDP) and no offloading; one device holds everything",
        "framework overhead and allocator fragmentation not included",
    ]
    return bill


def measure_saved_bytes(module: nn.Module, *args: Any, **kwargs: Any) -> int:
    """Bytes of the distinct tensors autograd saves for backward in one real forward.

    An independent check of the activation estimate; weights are excluded."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in weights:
            storages[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(*args, **kwargs)
    return sum(storages.values())
