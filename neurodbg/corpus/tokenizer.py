"""The tokenizer a corpus is counted with, without loading model weights when
the model is an embedded one (its tokenizer files sit in the provisioned cache)."""

from __future__ import annotations

from typing import Any

from neurodbg.errors import ModelLoadError
from neurodbg.models import catalogue, provision


def load_tokenizer(model: str = "default", *, progress: bool = True) -> Any:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    entry = catalogue.lookup(model)
    if entry is not None:
        return AutoTokenizer.from_pretrained(str(provision.pull(entry, progress=progress)))
    from neurodbg.models.loader import load_model

    tokenizer = load_model(model, progress=progress).tokenizer
    if tokenizer is None:
        raise ModelLoadError(f"{model} has no tokenizer to count corpus tokens with")
    return tokenizer
