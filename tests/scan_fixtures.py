"""A tiny random Llama that shares the default tokenizer, and a small real corpus
(standard-library docstrings written to JSONL at test time), for fast scans."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
import transformers

import neurodbg

MODULES = ("json", "argparse", "collections", "functools", "logging", "pathlib", "unittest", "textwrap",
           "string", "re", "csv", "heapq", "bisect", "datetime", "decimal", "fractions", "statistics")


def tiny_llama(tokenizer: object, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=128, tie_word_embeddings=True)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def save_tiny(tokenizer: object, directory: Path) -> Path:
    module = tiny_llama(tokenizer)
    module.save_pretrained(directory)
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
    return directory


def tiny_model(tokenizer: object) -> neurodbg.Model:
    return neurodbg.Model(tiny_llama(tokenizer), tokenizer, name="tiny-llama")


def write_corpus(path: Path, n_docs: int = 60) -> Path:
    import importlib

    docs: list[str] = []
    for name in MODULES:
        module = importlib.import_module(name)
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if callable(obj) else None
            if doc and len(doc) > 80 and doc not in docs:
                docs.append(doc)
    with open(path, "w") as handle:
        for doc in docs[:n_docs]:
            handle.write(json.dumps({"text": doc}) + "\n")
    return path
