"""Corpora: streaming readers for text, JSONL, Parquet and Hugging Face datasets,
a built-in default corpus, and deterministic chunking into token sequences."""

from neurodbg.corpus.chunking import Sequence, SequenceStream, sequences
from neurodbg.corpus.default import pull
from neurodbg.corpus.fingerprint import corpus_settings_fingerprint, tokenizer_fingerprint
from neurodbg.corpus.open import open_corpus
from neurodbg.corpus.source import CorpusSource
from neurodbg.corpus.stats import CorpusStats, corpus_stats

__all__ = [
    "CorpusSource", "CorpusStats", "Sequence", "SequenceStream", "corpus_settings_fingerprint", "corpus_stats",
    "open_corpus", "pull", "sequences", "tokenizer_fingerprint",
]
