"""Benchmark: streaming atlas export, as a user runs it (`neurodbg atlas export`).

Each format is exported by the real command in a child process, into a
temporary directory next to nothing else; the figures are the child's wall time,
neurons per second and peak resident memory (from `wait4`). The target is in
absolute terms, so the figures depend on the machine more than a ratio would;
the atlas is read once first so every format finds it in the page cache.
Target (issue 19): the whole default-model atlas of a 131,072-token scan
(46,080 neurons) in <= 2 minutes with <= 1 GB peak memory on the 2-core machine.

    .venv/bin/python bench/atlas_export.py --atlas ATLAS [--formats jsonl,parquet,json] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))


def read_once(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(1 << 24):
            pass


def export_once(atlas: Path, fmt: str, out_dir: Path) -> dict[str, float]:
    target = out_dir / f"atlas.{fmt}"
    args = [NEURODBG, "atlas", "export", "--atlas", str(atlas)]
    args += ["--parquet", str(target)] if fmt == "parquet" else [f"--{fmt}", "--out", str(target)]
    start = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    err = child.stderr.read().decode() if child.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"export failed: {err.strip()}")
    size = target.stat().st_size
    target.unlink()
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", type=Path, required=True)
    parser.add_argument("--formats", default="jsonl,parquet")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from neurodbg.atlas import AtlasStore, records

    store = AtlasStore.open(args.atlas)
    neurons, meta = records.neuron_count(store), store.meta()
    store.close()
    database = args.atlas / "atlas.db"
    read_once(database)                        # warm the page cache, as a second export would find it
    results = {}
    with tempfile.TemporaryDirectory(dir=args.atlas.parent) as tmp:
        for fmt in args.formats.split(","):
            runs = [export_once(args.atlas, fmt, Path(tmp)) for _ in range(args.rounds)]
            best = min(runs, key=lambda r: r["seconds"])
            results[fmt] = {**best, "neurons_per_s": neurons / best["seconds"],
                            "peak_mb_max": max(r["peak_mb"] for r in runs)}
    summary = {"atlas_bytes": database.stat().st_size, "neurons": neurons, "tokens": meta.get("tokens"),
               "formats": results}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"atlas: {neurons:,} neurons, {meta.get('tokens'):,} tokens scanned, {summary['atlas_bytes'] / 1e6:,.0f} MB")
    for fmt, r in results.items():
        verdict = "meets" if r["seconds"] <= 120 and r["peak_mb_max"] <= 1024 else "MISSES"
        print(f"{fmt:>8}: {r['seconds']:6.1f} s = {r['neurons_per_s']:,.0f} neurons/s, "
              f"peak {r['peak_mb_max']:,.0f} MB, "
              f"output {r['bytes'] / 1e6:,.0f} MB  "
              f"[target <= 120 s, <= 1024 MB: {verdict}]")


if __name__ == "__main__":
    main()
