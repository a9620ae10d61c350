"""Built-in architecture families; importing this package registers them."""

from neurodbg.sites.architectures import bert, gpt2, gpt_neox, llama

__all__ = ["bert", "gpt2", "gpt_neox", "llama"]
