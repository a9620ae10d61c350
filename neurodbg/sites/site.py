"""A site: one tensor inside a model that a trace can read or edit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from neurodbg.errors import UnknownSiteError

Port = Literal["input", "output"]

_RAW = re.compile(r"^(?P<path>[\w.*,\-]*):(?P<port>input|output)(?:\[(?P<index>\d+)\])?$")


@dataclass(frozen=True)
class Site:
    """Where a tensor lives: the `index`-th element of a module's input or output.

    `name` is what the user sees (canonical like ``layers.5.mlp.act`` or raw like
    ``fc2:output``); `module_path` is the path in ``named_modules()``."""

    name: str
    module_path: str
    port: Port = "output"
    index: int = 0
    layer: int | None = None
    editable: bool = True
    scannable: bool = True  # has neurons an atlas can hold (attention patterns and the router's choices do not)
    needs_eager_attention: bool = False
    token_axis: int = 1   # attention patterns [batch, head, query, key] use 2
    # convolution outputs [batch, channels, H, W]: the channels are the neurons and the H*W spatial
    # positions (row-major) play the tokens' part in interventions
    channel_axis: int | None = None
    # a [batch x tokens, units] tensor (a mixture of experts' router reshapes its input so): traced
    # as [batch, tokens, units], so positions and captures work as for any other site
    flat_tokens: bool = False
    # one routed expert's neurons inside a fused experts module (`module_path`): computed beside it from
    # the module's inputs, not read from a tensor it holds (`trace.expert_sites`)
    expert: int | None = None

    @property
    def is_raw(self) -> bool:
        return ":" in self.name


def parse_raw(name: str) -> tuple[str, Port, int]:
    """Split ``path.to.module:input|output[i]`` into its parts."""
    match = _RAW.match(name)
    if not match:
        raise UnknownSiteError(
            f"malformed raw site {name!r}: expected 'path.to.module:input' or 'path.to.module:output[i]'")
    port: Port = "input" if match["port"] == "input" else "output"
    return match["path"], port, int(match["index"] or 0)
