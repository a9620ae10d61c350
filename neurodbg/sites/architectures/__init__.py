"""Built-in architecture families; importing this package registers them."""

from neurodbg.sites.architectures import bert, cnn, gpt2, gpt_neox, llama, moe, vit

__all__ = ["bert", "cnn", "gpt2", "gpt_neox", "llama", "moe", "vit"]
