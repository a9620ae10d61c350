"""Writes the schema-2 atlases of this directory; run at commit a110a2e (see README.md)."""
# ruff: noqa: E402
import shutil
import sys

sys.path.insert(0, "tests")
from legacy_fixture import CORPUS, DATA, legacy_model, legacy_settings

import neurodbg
from neurodbg.corpus import corpus_stats, open_corpus
from neurodbg.scan import scan

tok = neurodbg.load_model("default", progress=False).tokenizer
model = legacy_model(tok)
src = open_corpus(str(CORPUS))
print(corpus_stats(src, tok, seq_len=32))
for name in ("complete", "partial"):
    d = DATA / name
    shutil.rmtree(d, ignore_errors=True)
s = scan(model, src, DATA / "complete", legacy_settings(), progress=False)
print(s)
s = scan(model, src, DATA / "partial", legacy_settings(), progress=False, stop_after_batches=2)
print(s)
from neurodbg.atlas import AtlasStore
from neurodbg.describe.exemplars import ExemplarReader
from neurodbg.describe.explainers import make
from neurodbg.describe.runner import background, describe

store = AtlasStore.open(DATA / "complete")
reader = ExemplarReader(store)
explainer, simulator = make("stat", background(store, tok, reader))
print(describe(store, explainer, simulator, reader=reader, progress=False))
from neurodbg.search.atlas_search import ensure_embeddings

print(ensure_embeddings(store))
store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
store.close()
