"""Benchmark: embedding every description of an atlas for search and clustering (issue 24).

Copies `--atlas` (a described atlas; the default model's 131,072-token atlas
has 92,160 descriptions), drops the copy's embeddings, and times the real path,
`ensure_embeddings`: each description's input-side concept (`searchable`),
equal concepts once, all-MiniLM-L6-v2 on the CPU. `--limit N` embeds only the
first N descriptions and projects the time for all of them. Target: all
92,160 descriptions of the default model in <= 10 minutes.

    .venv/bin/python bench/embed_descriptions.py --atlas ATLAS [--limit 4096] [--in-place]

`--in-place` embeds the atlas itself (its old embeddings are replaced) instead of a copy.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from neurodbg.atlas import AtlasStore, descriptions
from neurodbg.search.atlas_search import embed_rows, ensure_format, searchable
from neurodbg.search.embedder import embed

TARGET_SECONDS = 600
DEFAULT_MODEL_DESCRIPTIONS = 92_160


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--atlas", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--in-place", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        copy = args.atlas if args.in_place else Path(tmp) / "atlas"
        if not args.in_place:
            shutil.copytree(args.atlas, copy)
        store = AtlasStore.open(copy)
        ensure_format(store)
        with store.transaction() as conn:
            conn.execute("UPDATE descriptions SET embedding = NULL")
        rows = descriptions.unembedded(store)
        total = len(rows)
        rows = rows[:args.limit] if args.limit else rows
        embed(["warm up"])                                   # the model load is not embedding
        t0 = time.perf_counter()
        embed_rows(store, rows, progress=True)
        seconds = time.perf_counter() - t0
        rate = len(rows) / seconds
        full = [text for _, text in rows[:2048]]
        t0 = time.perf_counter()
        embed(full)
        full_rate = len(full) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        embed([searchable(t) for t in full])
        concept_rate = len(full) / (time.perf_counter() - t0)
        store.close()
    projected = DEFAULT_MODEL_DESCRIPTIONS / rate
    print(f"embedded {len(rows):,} of {total:,} descriptions in {seconds:.1f} s = {rate:,.0f}/s")
    print(f"same 2,048 descriptions: full text {full_rate:,.0f}/s, input-side concept {concept_rate:,.0f}/s "
          f"({concept_rate / full_rate:.2f}x)")
    print(f"all {DEFAULT_MODEL_DESCRIPTIONS:,} descriptions of the default model: {projected / 60:.1f} min "
          f"(target <= {TARGET_SECONDS // 60} min: {'met' if projected <= TARGET_SECONDS else 'MISSED'})")


if __name__ == "__main__":
    main()
