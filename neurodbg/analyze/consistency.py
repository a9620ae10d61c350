"""Self-consistency: ask the same question several times, vote, and see where the
samples part ways.

- Sampling is transformers' own `generate` (do_sample, temperature, top-k, top-p) with
  `torch.manual_seed(seed)` first and `num_return_sequences` samples in one batch, so
  a seeded run is reproducible and equals `generate` called with the same settings.
- Each sample's answer is extracted (`number`: the first number, commas dropped;
  `choice`: the first standalone option letter A-E; `regex:R`: R's first group, or its
  whole match) and the answers are voted: the vote, its agreement (votes ÷ samples),
  the answers' entropy (bits; samples without an answer count as one answer, "none").
- The fork: the first generated position where the samples' tokens differ; the
  model's top next-token probabilities there (given the shared prefix) and which
  branch each sample took. Beyond any peer: the neurons whose attribution separates
  the majority's token at the fork from the largest minority's — activation ×
  ∂(log p(majority) − log p(minority))/∂activation, summed over the prefix (the
  Monitor's attribution with each branch's token as target, subtracted).
- Triage: greedy decoding first; when the lowest probability the model gave a token
  of its greedy answer is at least `threshold` (0.9) the answer stands without
  sampling, otherwise the samples vote."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from neurodbg.analyze.neurons_behind import activations_and_grads, counted_positions
from neurodbg.analyze.prompt import Prompt, prepare
from neurodbg.analyze.sampling import Sampling
from neurodbg.errors import NeurodbgError
from neurodbg.model import Model

MAX_SAMPLES = 256
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_CHOICE = re.compile(r"(?<![A-Za-z])([A-E])(?![A-Za-z])")


def extractor(mode: str) -> Any:
    """The answer extractor for `number`, `choice` or `regex:R`; an unknown mode is refused."""
    if mode == "number":
        def number(text: str) -> str | None:
            found = _NUMBER.findall(text)      # the last: "345 * 678 = 233910" answers 233910
            return found[-1].replace(",", "") if found else None
        return number
    if mode == "choice":
        def choice(text: str) -> str | None:
            found = _CHOICE.search(text)
            return found.group(1) if found else None
        return choice
    if mode.startswith("regex:"):
        try:
            pattern = re.compile(mode.removeprefix("regex:"))
        except re.error as exc:
            raise NeurodbgError(f"bad regex in {mode!r}: {exc}") from None

        def regex(text: str) -> str | None:
            found = pattern.search(text)
            if not found:
                return None
            return found.group(1) if pattern.groups else found.group(0)
        return regex
    raise NeurodbgError(f"unknown extract mode {mode!r}: number, choice or regex:PATTERN")


@torch.no_grad()
def sample(model: Model, prompt: Prompt, samples: int, sampling: Sampling, *, max_new_tokens: int = 32
           ) -> torch.Tensor:
    """`samples` continuations [samples, T + new] of `prompt`, seeded (transformers' generate)."""
    if not 1 <= samples <= MAX_SAMPLES:
        raise NeurodbgError(f"samples must be between 1 and {MAX_SAMPLES}, not {samples}")
    sampling.check()
    tok = model.tokenizer
    torch.manual_seed(sampling.seed)
    ids = prompt.ids.to(model.device)
    out = model.module.generate(  # type: ignore[operator]
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, num_return_sequences=samples,
        pad_token_id=tok.pad_token_id if tok is not None and tok.pad_token_id is not None else tok.eos_token_id,
        **sampling.generate_kwargs())
    return out.cpu()


def _texts(model: Model, sequences: torch.Tensor, start: int) -> list[str]:
    tok = model.tokenizer
    assert tok is not None
    return [tok.decode(row[start:], skip_special_tokens=True) for row in sequences]


def _strip_end(row: list[int], eos: set[int]) -> list[int]:
    """Generated tokens up to the first end-of-sequence (the padding after it is not an answer)."""
    for i, t in enumerate(row):
        if t in eos:
            return row[:i + 1]
    return row


@dataclass
class Fork:
    position: int                          # absolute position in the sequence (prompt + generated)
    generated: int                         # how many generated tokens the samples share before it
    prefix: str                            # the shared generated text
    top: list[dict[str, Any]]              # the model's top next tokens there, with probabilities
    branches: list[dict[str, Any]]         # each token the samples took: token, probability, samples
    neurons: list[dict[str, Any]] = field(default_factory=list)   # majority vs minority attribution


@dataclass
class Consistency:
    prompt: str
    mode: str                              # "sampled" or "direct" (triage answered without sampling)
    answers: list[str | None]
    texts: list[str]
    vote: str | None
    votes: dict[str, int]
    agreement: float
    entropy: float
    confidence: float | None = None        # triage: the lowest probability of a greedy answer token
    fork: Fork | None = None
    sampling: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def vote(answers: list[str | None]) -> tuple[str | None, dict[str, int], float, float]:
    """(the most common answer, counts, agreement, entropy in bits); no answer counts as "none"."""
    counts = Counter("none" if a is None else a for a in answers)
    real = Counter(a for a in answers if a is not None)
    winner = real.most_common(1)[0][0] if real else None
    agreement = real[winner] / len(answers) if winner is not None else 0.0
    n = len(answers)
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    return winner, dict(counts.most_common()), agreement, abs(entropy)


def fork_of(model: Model, prompt: Prompt, sequences: torch.Tensor, *, k: int = 5, neurons: int = 20) -> Fork | None:
    """Where the samples first differ, what the model expected there, and the neurons between the
    two largest branches."""
    tok = model.tokenizer
    assert tok is not None
    eos = {t for t in [tok.eos_token_id, tok.pad_token_id] if t is not None}
    start = prompt.length
    rows = [_strip_end(row[start:].tolist(), eos) for row in sequences]
    shared = 0
    while all(len(r) > shared for r in rows) and len({r[shared] for r in rows}) == 1:
        shared += 1
    taken = [r[shared] for r in rows if len(r) > shared]
    if len(set(taken)) < 2:
        return None
    prefix_ids = torch.cat([prompt.ids[0], torch.tensor(rows[0][:shared], dtype=torch.long)])[None]
    with torch.no_grad():
        logits = model.module(prefix_ids.to(model.device)).logits[0, -1].float().cpu()
    probs = torch.softmax(logits, -1)
    top = probs.topk(k)
    counts = Counter(taken)
    branches = [{"token": tok.decode([t]), "id": t, "probability": round(float(probs[t]), 6), "samples": n}
                for t, n in counts.most_common()]
    fork = Fork(start + shared, shared, tok.decode(rows[0][:shared]),
                [{"token": tok.decode([int(i)]), "id": int(i), "probability": round(float(p), 6)}
                 for p, i in zip(top.values, top.indices, strict=True)], branches)
    if neurons > 0 and "layers.0.mlp.act" in model.sites:
        fork.neurons = branch_neurons(model, Prompt(prefix_ids, model.tokens(prefix_ids[0]),
                                                    prompt.template + [False] * shared),
                                      branches[0]["id"], branches[1]["id"], top=neurons)
    return fork


def branch_neurons(model: Model, prefix: Prompt, majority: int, minority: int, *, top: int = 20
                   ) -> list[dict[str, Any]]:
    """Neurons by activation × ∂(log p(majority) − log p(minority)), summed over the prefix's positions."""
    position = prefix.length - 1
    values, grads_major, _ = activations_and_grads(model, prefix, position, majority)
    _, grads_minor, _ = activations_and_grads(model, prefix, position, minority)
    where = counted_positions(prefix, position, True)
    total = torch.stack([(v * (gm - gn))[where].sum(0) for v, gm, gn in
                         zip(values, grads_major, grads_minor, strict=True)])          # [L, d]
    flat = total.flatten()
    layers = [s.layer for s in model.resolve("layers.*.mlp.act")]
    width = total.shape[1]
    out = []
    for idx in flat.abs().topk(min(top, flat.numel())).indices.tolist():
        li, n = divmod(idx, width)
        out.append({"id": f"L{layers[li]}/N{n}", "layer": int(layers[li] or 0), "neuron": n,
                    "value": round(float(total[li, n]), 6)})
    return out


@torch.no_grad()
def greedy_confidence(model: Model, prompt: Prompt, *, max_new_tokens: int) -> tuple[str, float]:
    """The greedy answer and the lowest probability the model gave one of its tokens."""
    tok = model.tokenizer
    assert tok is not None
    ids = prompt.ids.to(model.device)
    out = model.module.generate(  # type: ignore[operator]
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
        output_scores=True, return_dict_in_generate=True,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    new = out.sequences[0, prompt.length:]
    lowest = 1.0
    for score, token in zip(out.scores, new, strict=False):
        lowest = min(lowest, float(torch.softmax(score[0].float(), -1)[token]))
    return tok.decode(new, skip_special_tokens=True), lowest


def consistency(model: Model, text: str | Prompt, *, samples: int = 10, extract: str = "number",
                sampling: Sampling | None = None, max_new_tokens: int = 32, chat: bool = False,
                triage: float | None = None, fork_neurons: int = 20) -> Consistency:
    """Sample `samples` answers to `text` (or a prepared prompt, e.g. a conversation), extract and
    vote (see the module docstring). With `triage`: answer greedily when every greedy token had at
    least that probability."""
    if model.tokenizer is None:
        raise NeurodbgError(f"{model.name} has no tokenizer")
    pick = extractor(extract)
    settings = sampling or Sampling()
    settings.check()
    if triage is not None and not 0 < triage <= 1:
        raise NeurodbgError(f"the triage threshold must be in (0, 1], not {triage}")
    prompt = text if isinstance(text, Prompt) else prepare(model, text, chat=chat)
    text = text if isinstance(text, str) else model.tokenizer.decode(prompt.ids[0])
    confidence = None
    if triage is not None:
        answer, confidence = greedy_confidence(model, prompt, max_new_tokens=max_new_tokens)
        if confidence >= triage:
            one = pick(answer)
            winner, counts, agreement, entropy = vote([one])
            return Consistency(text, "direct", [one], [answer], winner, counts, agreement, entropy,
                               round(confidence, 6), sampling=asdict(settings))
    sequences = sample(model, prompt, samples, settings, max_new_tokens=max_new_tokens)
    texts = _texts(model, sequences, prompt.length)
    answers = [pick(t) for t in texts]
    winner, counts, agreement, entropy = vote(answers)
    return Consistency(text, "sampled", answers, texts, winner, counts, round(agreement, 6), round(entropy, 6),
                       None if confidence is None else round(confidence, 6),
                       fork_of(model, prompt, sequences, neurons=fork_neurons), asdict(settings))
