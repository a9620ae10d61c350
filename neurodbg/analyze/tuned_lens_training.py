"""Training a tuned lens and scoring it on held-out text.

Each layer's translator minimises KL(final ‖ lens) over the corpus's tokens: the model's own
next-token distribution against the distribution its layer-l stream gives through the
translator, the final norm and the unembedding. The model is frozen and runs once per batch
without gradients; each layer's loss is back-propagated on its own, so memory holds one
layer's [tokens, vocab] logits at a time. Almost all the time goes into the unembedding of
every layer (forward and backward), about 2 × layers unembeddings per token against the
model's one: `bench/tuned_lens.py` measures it.

Windows come from the corpus's deterministic chunking: every tenth window is held out for
scoring and never trained on."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from neurodbg.analyze.logit_lens import lens_readout
from neurodbg.analyze.tuned_lens import TunedLens
from neurodbg.corpus.source import CorpusSource
from neurodbg.errors import CorpusError, TunedLensError
from neurodbg.model import Model
from neurodbg.progress import RateProgress

HELD_OUT_EVERY = 10       # window i is held out when i % 10 == 9


@dataclass
class LensEvaluation:
    """Mean KL(final ‖ lens) in nats per token at every layer, logit lens and tuned lens, on held-out windows."""
    tokens: int
    logit_kl: list[float]
    tuned_kl: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens,
                "layers": [{"layer": i, "logit_kl": round(a, 4), "tuned_kl": round(b, 4)}
                           for i, (a, b) in enumerate(zip(self.logit_kl, self.tuned_kl, strict=True))]}

    def figure(self, path: str | os.PathLike[str], *, title: str = "") -> Path:
        from neurodbg.viz.tuned_lens import kl_curve

        return kl_curve(self, Path(path), title=title)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LensEvaluation:
        rows = data["layers"]
        return cls(int(data["tokens"]), [r["logit_kl"] for r in rows], [r["tuned_kl"] for r in rows])


def corpus_windows(model: Model, corpus: str | os.PathLike[str] | CorpusSource, *, seq_len: int, train: int,
                   held_out: int) -> tuple[list[list[int]], list[list[int]]]:
    """Up to `train` training windows and `held_out` held-out windows of `seq_len` tokens."""
    from neurodbg.corpus.chunking import sequences
    from neurodbg.corpus.open import open_corpus

    source = corpus if isinstance(corpus, CorpusSource) else open_corpus(corpus)
    fit: list[list[int]] = []
    kept: list[list[int]] = []
    try:
        for seq in sequences(source, model.tokenizer, seq_len=seq_len):
            (kept if seq.index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else fit).append(seq.ids)
            if len(fit) >= train and len(kept) >= held_out:
                break
    except CorpusError:
        pass                  # too small for one window: reported below with the counts
    if not fit or (held_out and not kept):
        raise TunedLensError(f"the corpus {source.name} gives {len(fit)} training and {len(kept)} held-out windows "
                             f"of {seq_len} tokens; a tuned lens needs at least one of each")
    return fit[:train], kept[:held_out]


def _batches(windows: list[list[int]], batch: int, device: torch.device) -> Iterator[torch.Tensor]:
    for start in range(0, len(windows), batch):
        yield torch.tensor(windows[start:start + batch], device=device)


@torch.no_grad()
def _streams_and_targets(model: Model, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every layer's resid_out [B, T, d] and the model's log-probabilities [B·T, vocab]."""
    names, _, _ = lens_readout(model)
    with model.trace(capture=names) as tr:
        tr.forward({"input_ids": ids})
    target = torch.log_softmax(tr.logits.float(), dim=-1)
    return [tr[n] for n in names], target.reshape(-1, target.shape[-1])


def _kl_sum(readout: tuple[torch.nn.Module, torch.nn.Module], lens: TunedLens, layer: int, stream: torch.Tensor,
            target: torch.Tensor) -> torch.Tensor:
    """Σ over tokens of KL(final ‖ lens at `layer`); `readout`: the final norm and the unembedding."""
    norm, unembed = readout
    logits = unembed(norm(lens.translate(layer, stream))).float()
    logq = torch.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=-1)
    return F.kl_div(logq, target, log_target=True, reduction="sum")


@contextmanager
def _frozen(model: Model) -> Iterator[None]:
    """No gradients for the model's own weights while the translators train (restored after)."""
    flags = [(p, p.requires_grad) for p in model.module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@torch.no_grad()
def evaluate_lens(model: Model, lens: TunedLens, windows: list[list[int]], *, batch: int = 4) -> LensEvaluation:
    """Held-out KL per layer of the logit lens (identity translators) and of `lens`."""
    lens.check(model)
    identity = TunedLens.identity(model)
    readout = lens_readout(model)[1:]
    n = model.n_layers
    logit, tuned = [0.0] * n, [0.0] * n
    tokens = 0
    for ids in _batches(windows, batch, model.device):
        streams, target = _streams_and_targets(model, ids)
        tokens += target.shape[0]
        for layer, h in enumerate(streams):
            logit[layer] += float(_kl_sum(readout, identity, layer, h, target))
            tuned[layer] += float(_kl_sum(readout, lens, layer, h, target))
    return LensEvaluation(tokens, [v / tokens for v in logit], [v / tokens for v in tuned])


def train_tuned_lens(model: Model, corpus: str | os.PathLike[str] | CorpusSource = "default", *,
                     tokens: int = 16_384, seq_len: int = 128, batch: int = 2, lr: float = 1e-3, epochs: int = 1,
                     eval_tokens: int = 4_096, seed: int = 0, progress: bool = True) -> TunedLens:
    """Train every layer's translator but the last (which stays the identity) with Adam on
    `tokens` corpus tokens, then score it on `eval_tokens` held-out tokens (`info["evaluation"]`)."""
    for name, value in (("tokens", tokens), ("seq_len", seq_len), ("batch", batch), ("epochs", epochs)):
        if value < 1:
            raise TunedLensError(f"{name} must be at least 1, not {value}")
    if not (math.isfinite(lr) and lr > 0):
        raise TunedLensError(f"the learning rate must be a positive number, not {lr}")
    if model.tokenizer is None:
        raise TunedLensError(f"{model.name} has no tokenizer: a tuned lens is trained on text")
    lens = TunedLens.identity(model)
    fit, held = corpus_windows(model, corpus, seq_len=seq_len, train=math.ceil(tokens / seq_len),
                               held_out=math.ceil(eval_tokens / seq_len) if eval_tokens > 0 else 0)
    params = [lens.weights.requires_grad_(True), lens.biases.requires_grad_(True)]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    readout = lens_readout(model)[1:]
    steps, started = 0, time.perf_counter()
    with _frozen(model), RateProgress(progress, "tuned lens", len(fit) * seq_len * epochs, unit="tokens") as bar:
        for _ in range(epochs):
            order = [fit[i] for i in torch.randperm(len(fit), generator=generator).tolist()]
            for ids in _batches(order, batch, model.device):
                streams, target = _streams_and_targets(model, ids)
                optimizer.zero_grad(set_to_none=False)
                for layer, h in enumerate(streams[:-1]):
                    (_kl_sum(readout, lens, layer, h, target) / target.shape[0]).backward()
                optimizer.step()
                steps += 1
                bar.advance(int(ids.numel()))
    lens.weights, lens.biases = lens.weights.detach(), lens.biases.detach()
    lens.info = {"corpus": str(getattr(corpus, "name", corpus)), "train_tokens": len(fit) * seq_len,
                 "seq_len": seq_len, "batch": batch, "lr": lr, "epochs": epochs, "steps": steps, "seed": seed,
                 "seconds": round(time.perf_counter() - started, 1)}
    if held:
        lens.info["evaluation"] = evaluate_lens(model, lens, held, batch=batch * 2).to_dict()
    return lens
