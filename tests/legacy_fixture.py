"""The model and corpus behind `tests/data/legacy_atlas/`: atlases written by the code of
commit a110a2e (schema version 2, the corpus identity that predates
`corpus_settings_fingerprint`), kept to test that today's code upgrades them and
loses nothing. The model's weights are drawn from a seeded generator, not from
transformers' initialisation, so they do not change with the transformers version."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

import neurodbg

DATA = Path(__file__).parent / "data" / "legacy_atlas"
CORPUS = DATA / "corpus.jsonl"
SITES = ("layers.*.mlp.act",)
SEQ_LEN, BATCH, TOP_K, RANDOM_K = 32, 4, 4, 2


def legacy_model(tokenizer: object) -> neurodbg.Model:
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=24,  # type: ignore[arg-type]
                                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                      max_position_embeddings=64, tie_word_embeddings=True)
    module = transformers.LlamaForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(20261204)
    with torch.no_grad():
        for _, param in sorted(module.named_parameters()):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return neurodbg.Model(module, tokenizer, name="legacy-tiny-llama")


def legacy_settings(**changes: object) -> object:
    from neurodbg.scan import ScanSettings

    return ScanSettings(sites=SITES, seq_len=SEQ_LEN, batch_size=BATCH, top_k=TOP_K, random_k=RANDOM_K,
                        **changes)  # type: ignore[arg-type]
