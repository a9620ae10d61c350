"""Benchmark: what the web server adds. The same requests made through HTTP to a
real uvicorn server on loopback and as direct Monitor calls, alternating, in one
process; median of per-round ratios. Then 16 clients at once against the same
16 requests made one after another through HTTP (the model is shared behind a
lock, so the ideal is 1.0: concurrency should cost nothing and gain nothing on
one model).

    .venv/bin/python bench/serve_overhead.py --atlas ATLAS [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

import neurodbg
from neurodbg.analyze.monitor import Monitor
from neurodbg.serve import create_app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serving import running  # the tests' real-server helper

CASE = "Q: Which number is bigger, 9.11 or 9.9?\nA: 9."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    model = neurodbg.load_model(progress=False)
    monitor = Monitor(model, args.atlas)
    ids = monitor.prompt(CASE).ids[0].tolist()
    bodies = {
        "tokens": ("/api/tokens", {"input": {"ids": ids}}),
        "analyze (attribution, top 100)": ("/api/analyze", {"input": {"ids": ids[:-1]}, "target_id": ids[-1]}),
        "lens": ("/api/lens", {"input": {"ids": ids}}),
    }
    direct = {
        "tokens": lambda: monitor.tokens(monitor.from_ids(ids)),
        "analyze (attribution, top 100)": lambda: monitor.analyze(monitor.from_ids(ids[:-1]), target=ids[-1]),
        "lens": lambda: monitor.lens_view(monitor.from_ids(ids)),
    }
    with running(create_app(Monitor(model, args.atlas))) as url, httpx.Client(base_url=url, timeout=600) as client:
        def http(name: str) -> None:
            path, body = bodies[name]
            client.post(path, json=body).raise_for_status()

        for name in bodies:                       # warm both paths
            http(name)
            direct[name]()
        print(f"{'request':32s} {'HTTP ms':>9s} {'direct ms':>10s} {'ratio':>7s}")
        for name in bodies:
            ratios, a_times, b_times = [], [], []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                http(name)
                t1 = time.perf_counter()
                direct[name]()
                t2 = time.perf_counter()
                a_times.append(t1 - t0)
                b_times.append(t2 - t1)
                ratios.append((t1 - t0) / (t2 - t1))
            print(f"{name:32s} {1000 * statistics.median(a_times):9.1f} {1000 * statistics.median(b_times):10.1f} "
                  f"{statistics.median(ratios):7.3f}")

        requests = [("/api/analyze", {"input": {"ids": ids[:n]}, "target_id": ids[n], "top": 30})
                    for n in range(len(ids) - 16, len(ids))]
        t0 = time.perf_counter()
        for path, body in requests:
            client.post(path, json=body).raise_for_status()
        serial = time.perf_counter() - t0
        with ThreadPoolExecutor(16) as pool:
            t0 = time.perf_counter()
            results = list(pool.map(lambda r: httpx.post(url + r[0], json=r[1], timeout=600).status_code, requests))
            parallel = time.perf_counter() - t0
        assert results == [200] * 16
        print(f"16 analyses: one after another {serial:.2f} s, 16 clients at once {parallel:.2f} s, "
              f"ratio {parallel / serial:.3f}")


if __name__ == "__main__":
    main()
