"""`neurodbg lens|attention|patch|vector`: the classic interpretability views."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from neurodbg.cli.common import JsonOpt, ModelOpt, console, emit_json, finite, load
from neurodbg.errors import NeurodbgError

ChatOpt = Annotated[bool, typer.Option(help="Wrap the prompt in the model's chat template.")]
PngOpt = Annotated[Path | None, typer.Option(help="Write a heatmap PNG here.")]


def _monitor(model: str, quiet: bool) -> Any:
    from neurodbg.analyze.monitor import Monitor

    return Monitor(load(model, quiet=quiet))


def lens(
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    model: ModelOpt = "default",
    target: Annotated[str | None, typer.Option(help="Track this next token's rank and probability.")] = None,
    position: Annotated[int | None, typer.Option(help="Position read (default: last).")] = None,
    k: Annotated[int, typer.Option(min=1, help="Top predictions per layer.")] = 5,
    png: PngOpt = None,
    chat: ChatOpt = False,
    tuned: Annotated[bool, typer.Option(help="The tuned lens: each layer through its trained translator first "
                                        "(the model's lens from `train-lens`, or --lens-file).")] = False,
    lens_file: Annotated[Path | None, typer.Option(help="A tuned lens file (implies --tuned).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Logit lens (or tuned lens): each layer's residual stream through the final norm and unembedding."""
    from neurodbg.analyze.tuned_lens import lens_for

    monitor = _monitor(model, json_out)
    translators = lens_for(monitor.model, lens_file) if tuned or lens_file else None
    report = monitor.lens_view(prompt, position=position, target=target, k=k, chat=chat, tuned=translators)
    if png:
        report.heatmap(png)
    if json_out:
        emit_json({**report.to_dict(), "png": str(png) if png else None})
        return
    for r in report.layers:
        top = ", ".join(f"{t!r} {p_:.3f}" for t, _, p_ in r.top)
        extra = f"   target rank {r.target_rank}, p {r.target_prob:.4f}" if r.target_rank is not None else ""
        console.print(f"L{r.layer:<3} {top}{extra}", markup=False)


def attention(
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    model: ModelOpt = "default",
    layer: Annotated[list[int] | None, typer.Option("--layer", help="Layers (repeatable; default: all).")] = None,
    head: Annotated[int | None, typer.Option(help="One head (default: the mean over heads).")] = None,
    png: PngOpt = None,
    chat: ChatOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Attention patterns per layer and head; a heatmap grid of the chosen layers."""
    view = _monitor(model, json_out).attention_view(prompt, layers=layer, head=head, chat=chat)
    if png:
        view.grid_png(png)
    if json_out:
        emit_json({**view.to_dict(), "png": str(png) if png else None})
        return
    for li, a in view.chosen().items():
        q = len(view.tokens) - 1
        best = np.argsort(-a[q])[:3]
        console.print(f"L{li:<3} last token attends to " + ", ".join(f"{view.tokens[j]!r} {a[q, j]:.2f}"
                                                                      for j in best), markup=False)


def patch(
    clean: Annotated[str, typer.Argument(help="The clean prompt.")],
    corrupted: Annotated[str, typer.Argument(help="The corrupted prompt (same number of tokens).")],
    answer: Annotated[str, typer.Option(help="The clean answer token.")],
    foil: Annotated[str, typer.Option(help="The corrupted answer token.")],
    model: ModelOpt = "default",
    sites: Annotated[str, typer.Option(help="Sites swept, e.g. layers.*.resid_out or layers.*.mlp.out.")]
    = "layers.*.resid_out",
    per_position: Annotated[bool, typer.Option(help="Patch one position at a time.")] = False,
    png: PngOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Activation patching: how much of logit(answer) − logit(foil) each site restores."""
    from neurodbg.analyze.patching import patch_sweep
    from neurodbg.analyze.prompt import prepare, single_token

    m = load(model, quiet=json_out)
    result = patch_sweep(m, prepare(m, clean), prepare(m, corrupted), single_token(m, answer), single_token(m, foil),
                         sites=sites, per_position=per_position)
    if png:
        from neurodbg.viz.figures import heatmap

        cols = prepare(m, corrupted).tokens if per_position else ["all positions"]
        heatmap(result.restored.numpy(), row_labels=result.sites, col_labels=cols, title="share of the logit "
                "difference restored by patching", path=png, xlabel="position", ylabel="site")
    if json_out:
        emit_json({**result.to_dict(), "png": str(png) if png else None})
        return
    console.print(f"logit difference: clean {result.clean:+.3f}, corrupted {result.corrupted:+.3f}", markup=False)
    restored = result.restored
    for i, site in enumerate(result.sites):
        console.print(f"{site:<28} restored {float(restored[i].max()):+.3f}", markup=False)


def vector(
    prompt: Annotated[str, typer.Argument(help="The prompt to steer.")],
    positive: Annotated[list[str], typer.Option("--positive", help="Prompts of the wanted side (repeatable).")],
    negative: Annotated[list[str], typer.Option("--negative", help="Prompts of the other side (repeatable).")],
    site: Annotated[str, typer.Option(help="Where the vector is read and added.")] = "layers.10.resid_out",
    strength: Annotated[list[float] | None, typer.Option("--strength", parser=finite(),
                                                         help="Strengths swept (repeatable).")]
    = None,
    target: Annotated[str | None, typer.Option(help="Report this next token's log-prob.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=512)] = 20,
    model: ModelOpt = "default",
    json_out: JsonOpt = False,
) -> None:
    """Steering vector: mean(positive) − mean(negative) activations at a site, added with a strength."""
    from neurodbg.analyze.prompt import prepare, single_token
    from neurodbg.analyze.vectors import mean_difference, sweep

    m = load(model, quiet=json_out)
    vec = mean_difference(m, site, positive, negative)
    points = sweep(m, prepare(m, prompt), site, vec, strength or [0.0, 2.0, 4.0, 8.0],
                   target=single_token(m, target) if target else None, max_new_tokens=max_new_tokens)
    if json_out:
        emit_json({"site": site, "norm": float(vec.norm()), "points": [pt.to_dict() for pt in points]})
        return
    for pt in points:
        lp = "" if pt.target_logprob is None else f"  log p = {pt.target_logprob:.3f}"
        console.print(f"strength {pt.strength:>6g}: {pt.text!r}{lp}", markup=False)


def train_lens(
    model: ModelOpt = "default",
    corpus: Annotated[str, typer.Option(help="Corpus trained on (a built-in name, file or directory).")] = "default",
    tokens: Annotated[int, typer.Option(min=1, help="Training tokens.")] = 16_384,
    eval_tokens: Annotated[int, typer.Option(min=0, help="Held-out tokens scored after training.")] = 4_096,
    seq_len: Annotated[int, typer.Option(min=2, max=4096, help="Tokens per window.")] = 128,
    batch: Annotated[int, typer.Option(min=1, help="Windows per step.")] = 2,
    lr: Annotated[float, typer.Option(parser=finite(1e-8, 1.0), help="Adam's learning rate.")] = 1e-3,
    epochs: Annotated[int, typer.Option(min=1, max=100)] = 1,
    out: Annotated[Path | None, typer.Option(help="Write the lens here (default: the cache, by the model's "
                                             "fingerprint, where `lens --tuned` finds it).")] = None,
    png: Annotated[Path | None, typer.Option(help="Write the held-out KL per layer (logit vs tuned lens) "
                                             "here.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a tuned lens: per-layer affine translators minimising KL to the model's own next-token
    distribution; prints held-out KL per layer, logit lens vs tuned lens."""
    from neurodbg.analyze.tuned_lens import default_path
    from neurodbg.analyze.tuned_lens_training import LensEvaluation, train_tuned_lens

    if png is not None and eval_tokens == 0:
        raise NeurodbgError("--png draws the held-out evaluation: give --eval-tokens above 0")
    m = load(model, quiet=json_out)
    lens = train_tuned_lens(m, corpus, tokens=tokens, seq_len=seq_len, batch=batch, lr=lr, epochs=epochs,
                            eval_tokens=eval_tokens, progress=not json_out)
    path = lens.save(out or default_path(m))
    info = lens.info
    if png is not None:
        LensEvaluation.from_dict(info["evaluation"]).figure(png, title=f"{m.name}: held-out KL to the final "
                                                                      f"distribution")
    if json_out:
        emit_json({"path": str(path), **info, "png": str(png) if png else None})
        return
    console.print(f"trained on {info['train_tokens']:,} tokens in {info['steps']} steps ({info['seconds']} s); "
                  f"saved {path}", markup=False)
    if "evaluation" in info:
        ev = LensEvaluation.from_dict(info["evaluation"])
        console.print(f"held-out KL to the final distribution (nats/token, {ev.tokens:,} tokens):", markup=False)
        console.print("layer   logit lens   tuned lens", markup=False)
        for i, (a, b) in enumerate(zip(ev.logit_kl, ev.tuned_kl, strict=True)):
            console.print(f"L{i:<6} {a:>10.3f}   {b:>10.3f}", markup=False)
