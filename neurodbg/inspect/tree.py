"""The module tree: each module's class, parameter count and output shape.

Output shapes come from one probe forward with a hook on every module (hooks
removed afterwards). Runs of identical siblings (30 decoder layers) collapse
into one entry with a repeat count."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class Node:
    name: str
    kind: str
    params: int
    shape: list[int] | None = None
    repeat: int = 1
    children: list[Node] = field(default_factory=list)

    def signature(self) -> tuple[Any, ...]:
        return (self.kind, self.params, tuple(self.shape or ()), tuple(c.signature() for c in self.children))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind, "params": self.params}
        if self.shape is not None:
            out["output_shape"] = self.shape
        if self.repeat > 1:
            out["repeat"] = self.repeat
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    for attr in ("last_hidden_state", "logits"):
        value = getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    return None


def probe_shapes(module: nn.Module, *args: Any, **kwargs: Any) -> dict[str, list[int]]:
    """Output shape of every module during one forward on the given inputs."""
    shapes: dict[str, list[int]] = {}
    handles = []
    for name, sub in module.named_modules():
        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            t = _first_tensor(out)
            if t is not None and name not in shapes:
                shapes[name] = list(t.shape)
        handles.append(sub.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return shapes


def build_tree(module: nn.Module, shapes: dict[str, list[int]] | None = None, name: str = "",
               max_depth: int | None = None, _depth: int = 0) -> Node:
    shapes = shapes or {}
    node = Node(name or type(module).__name__, type(module).__name__,
                sum(p.numel() for p in module.parameters()), shapes.get(name))
    if max_depth is not None and _depth >= max_depth:
        return node
    for child_name, child in module.named_children():
        path = f"{name}.{child_name}" if name else child_name
        sub = build_tree(child, shapes, path, max_depth, _depth + 1)
        sub.name = child_name
        previous = node.children[-1] if node.children else None
        if previous is not None and previous.signature() == sub.signature() and child_name.isdigit():
            previous.repeat += 1
        else:
            node.children.append(sub)
    return node


def render_lines(node: Node, indent: str = "") -> list[str]:
    """Plain-text tree: one line per node."""
    label = node.name
    if node.repeat > 1:
        first = int(node.name) if node.name.isdigit() else 0
        label = f"{node.name}-{first + node.repeat - 1} (x{node.repeat})"
    shape = f"  -> {node.shape}" if node.shape is not None else ""
    lines = [f"{indent}{label}: {node.kind}  [{node.params:,} params]{shape}"]
    for child in node.children:
        lines += render_lines(child, indent + "  ")
    return lines
