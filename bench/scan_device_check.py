"""GPU check of the scan, for a machine that has the model's shape but not its weights
(a lent accelerator that cannot download): the default model's config and tokenizer
with random weights, random token batches for the timings.

  (A) SiteStats on CUDA equals SiteStats on the CPU fed the same activations, bit for bit
      (the histogram within its stated error: the CPU bins by a float32 formula);
  (B) a whole scan on CUDA into a real atlas; one neuron's record against brute force
      (manual hooks on the same module);
  (C) scan throughput / plain forward truncated at the last scanned layer, on CUDA at
      several batch sizes, with the eager and the compiled statistics, and on the CPU.

    python bench/scan_device_check.py [--model-dir DIR] [--corpus FILE] [--no-cpu]

DIR holds config.json and the tokenizer (default: the provisioned default model);
FILE is any text corpus (default: this repository's README.md). Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paired import synchronizer, truncated_forward

import neurodbg
from neurodbg.atlas import AtlasStore
from neurodbg.atlas import neuron as atlas_neuron
from neurodbg.corpus import open_corpus
from neurodbg.paths import models_dir
from neurodbg.scan import ScanSettings, scan
from neurodbg.scan.runner import batches, sequence_stream
from neurodbg.scan.scanner import Scanner
from neurodbg.scan.site_stats import SiteStats


@dataclass
class Sequence:
    index: int
    ids: list[int]


def differences(a: Any, b: Any, path: str = "", n_tokens: int = 1) -> list[str]:
    """Where two state dicts differ. Float sums only within rounding, compared as means (to
    1e-5 relative, 1e-7 absolute): their summation order differs by device and kernel, and
    a column whose values cancel to ~0 has a large relative error in its float32 sum."""
    if isinstance(a, dict):
        n_tokens = max(int(a.get("n_tokens", n_tokens)), 1)
        return [d for key in a for d in differences(a[key], b[key], f"{path}/{key}", n_tokens)]
    if torch.is_tensor(a):
        a, b = a.cpu(), b.cpu()
        if path.endswith(("/total", "/total_sq")):
            a, b = a / n_tokens, b / n_tokens
            return [] if torch.allclose(a, b, rtol=1e-5, atol=1e-7) else [f"{path}: {(a - b).abs().max():.3g}"]
        if path.endswith("/hist") and not torch.equal(a, b):
            # the CPU bins by a float32 formula, a GPU by exact search: values at an edge may move
            moved = int((a - b).abs().sum()) // 2
            return [f"{path}: {moved} values in a neighbouring bin" + (" (totals differ)" if
                    not torch.equal(a.sum(1), b.sum(1)) else "")]
        return [] if torch.equal(a, b) else [f"{path}: {int((a != b).sum())} of {a.numel()} differ"]
    return [] if a == b else [f"{path}: {a} != {b}"]


def check_site_stats_on_cuda() -> None:
    settings = ScanSettings()
    gen = torch.Generator().manual_seed(1)
    on_cpu, on_gpu = SiteStats(1536, settings, "cpu"), SiteStats(1536, settings, "cuda")
    for b in range(60):
        x = torch.randn(8, 64, 1536, generator=gen) * torch.rand(1536, generator=gen)
        x = (x * 8).round() / 8            # ties
        if b % 9 == 5:
            x[:, :, :300] += 3 + b / 10    # a batch that floods some columns
        ids = torch.arange(b * 8, b * 8 + 8)
        on_cpu.update(x, ids)
        on_gpu.update(x.cuda(), ids.cuda())
    found = differences(on_cpu.state_dict(), on_gpu.state_dict())
    print("A SiteStats on CUDA vs CPU, 60 batches:", "identical" if not found else found[:8], flush=True)


def check_scan_against_brute_force(model: neurodbg.Model, corpus_path: Path, layer: int, index: int) -> None:
    corpus = open_corpus(corpus_path)
    settings = ScanSettings(batch_size=16)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        summary = scan(model, corpus, Path(tmp) / "atlas", settings, progress=False)
        print(f"B scan on {model.device}: {summary.tokens} tokens, {summary.neurons} neurons, "
              f"{time.time() - started:.1f}s", flush=True)
        record = atlas_neuron(AtlasStore.open(Path(tmp) / "atlas"), layer, index)
    seen: list[torch.Tensor] = []
    down = model.module.model.layers[layer].mlp.down_proj   # mlp.act is down_proj's input
    handle = down.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0][..., index].cpu()))
    seqs: list[Any] = []
    try:
        for batch in batches(sequence_stream(corpus, model, settings), settings.batch_size):
            seqs += batch
            with torch.no_grad():
                model.module(input_ids=torch.tensor([s.ids for s in batch], device=model.device), use_cache=False)
    finally:
        handle.remove()
    counted = torch.cat(seen)[:, 1:].double()
    ids = [s.index for s in seqs]
    ranked = sorted(range(len(seqs)), key=lambda i: (-float(counted[i].max()), ids[i]))[: settings.top_k]
    checks = {
        "mean": abs(record.mean - float(counted.mean())) < 1e-5,
        "std": abs(record.std - float(counted.std(correction=0))) < 1e-5,
        "active": abs(record.frac_active - float((counted > 0).double().mean())) < 1e-9,
        "max": record.max_value is not None and abs(record.max_value - float(counted.max())) < 1e-6,
        "top exemplars": [e.seq_index for e in record.exemplars.get("+", [])] == [ids[i] for i in ranked],
    }
    print(f"B L{layer}/N{index} against brute force:", checks, flush=True)


def throughput(model: neurodbg.Model, vocab: int, batch: int, warm: int, rounds: int, wide: bool | None) -> None:
    """Scan / plain forward on the same batches, for the eager statistics and the compiled
    ones (`fuse_after=0`: the path a long scan takes after `FUSE_AFTER_TOKENS`), fed the
    same batches side by side; their states are compared at the end."""
    device = model.device
    settings = ScanSettings(batch_size=batch)
    eager = Scanner(model, settings, wide=wide, fuse_after=None)
    compiled = Scanner(model, settings, wide=wide, fuse_after=0)
    gen = torch.Generator().manual_seed(2)
    counter = 0

    def next_batch() -> list[Sequence]:
        nonlocal counter
        rows = torch.randint(0, vocab, (batch, 64), generator=gen).tolist()
        counter += batch
        return [Sequence(counter - batch + i, row) for i, row in enumerate(rows)]

    synchronize = synchronizer(model)
    plain = truncated_forward(model)
    for _ in range(warm):
        fed = next_batch()
        eager.process(fed)
        compiled.process(fed)
    times: dict[str, list[float]] = {"plain": [], "eager": [], "compiled": []}
    for _ in range(rounds):
        fed = next_batch()
        for name, run in (("plain", plain), ("eager", eager.process), ("compiled", compiled.process)):
            synchronize()
            started = time.perf_counter()
            run(fed)
            synchronize()
            times[name].append(time.perf_counter() - started)
    ratio = {name: statistics.median(p / t for p, t in zip(times["plain"], times[name], strict=True))
             for name in ("eager", "compiled")}
    found = differences(eager.state_dict(), compiled.state_dict())
    print(f"C {device} batch {batch}, {'all layers at once' if eager.wide else 'layer by layer'}: plain "
          f"{batch * 64 / statistics.median(times['plain']):,.0f} tokens/s; ratio eager {ratio['eager']:.3f}, "
          f"compiled {ratio['compiled']:.3f} after {warm} batches; compiled vs eager state: "
          f"{'identical (sums within rounding)' if not found else found[:4]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=models_dir() / "smollm2-135m-instruct")
    parser.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[1] / "README.md")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU timings")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, {torch.get_num_threads()} CPU threads",
          flush=True)
    config = transformers.AutoConfig.from_pretrained(args.model_dir)
    torch.manual_seed(0)
    module = transformers.AutoModelForCausalLM.from_config(config).float().eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model_dir)

    check_site_stats_on_cuda()
    model = neurodbg.load_model(module.to("cuda"), tokenizer=tokenizer)
    check_scan_against_brute_force(model, args.corpus, min(5, config.num_hidden_layers - 1), 123)
    for batch, warm, rounds, wide in ((8, 60, 12, None), (256, 24, 8, None), (1024, 10, 5, None)):
        throughput(model, config.vocab_size, batch, warm, rounds, wide)
    if args.no_cpu:
        return
    model = neurodbg.load_model(module.to("cpu"), tokenizer=tokenizer)
    for batch, warm, rounds, wide in ((8, 40, 10, None), (8, 40, 10, False)):
        throughput(model, config.vocab_size, batch, warm, rounds, wide)


if __name__ == "__main__":
    main()
