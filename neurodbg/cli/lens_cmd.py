"""`neurodbg lens|attention|patch|vector`: the classic interpretability views."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from neurodbg.cli.common import JsonOpt, ModelOpt, console, emit_json, load
from neurodbg.errors import NeurodbgError

ChatOpt = Annotated[bool, typer.Option(help="Wrap the prompt in the model's chat template.")]
PngOpt = Annotated[Path | None, typer.Option(help="Write a heatmap PNG here.")]


def _model_and_prompt(model: str, prompt: str, chat: bool, quiet: bool) -> tuple[Any, Any]:
    from neurodbg.analyze.prompt import prepare

    m = load(model, quiet=quiet)
    return m, prepare(m, prompt, chat=chat)


def lens(
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    model: ModelOpt = "default",
    target: Annotated[str | None, typer.Option(help="Track this next token's rank and probability.")] = None,
    position: Annotated[int | None, typer.Option(help="Position read (default: last).")] = None,
    k: Annotated[int, typer.Option(min=1, help="Top predictions per layer.")] = 5,
    png: PngOpt = None,
    chat: ChatOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Logit lens: each layer's residual stream through the final norm and unembedding."""
    from neurodbg.analyze.logit_lens import lens_logits, logit_lens
    from neurodbg.analyze.prompt import single_token

    m, p = _model_and_prompt(model, prompt, chat, json_out)
    pos = p.position(position)
    target_id = single_token(m, target) if target is not None else None
    rows = logit_lens(m, p, pos, target=target_id, k=k)
    if png:
        import torch

        from neurodbg.viz.figures import heatmap

        probs = torch.softmax(lens_logits(m, p), dim=-1)        # [layers, T, vocab]
        tid = target_id if target_id is not None else int(probs[-1, pos].argmax())
        heatmap(probs[:, :, tid].numpy(), row_labels=[f"L{i}" for i in range(probs.shape[0])],
                col_labels=p.tokens, title=f"logit lens: p({m.tokenizer.decode([tid])!r}) by layer and position",
                path=png, xlabel="position", ylabel="layer", diverging=False)
    if json_out:
        emit_json({"position": pos, "layers": [r.to_dict() for r in rows], "png": str(png) if png else None})
        return
    for r in rows:
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
    from neurodbg.analyze.attention import attention_patterns

    m, p = _model_and_prompt(model, prompt, chat, json_out)
    patterns = attention_patterns(m, p, layer)
    heads = next(iter(patterns.values())).shape[0]
    if head is not None and not 0 <= head < heads:
        raise NeurodbgError(f"head {head} out of range (0-{heads - 1})")
    chosen = {li: (a[head] if head is not None else a.mean(0)).numpy() for li, a in patterns.items()}
    if png:
        from neurodbg.viz.figures import attention_grid

        which = f"head {head}" if head is not None else "mean over heads"
        attention_grid(chosen, p.tokens, path=png, title=f"attention ({which})")
    if json_out:
        emit_json({"tokens": p.tokens, "heads": heads, "head": head,
                   "layers": {str(li): np.round(a, 5).tolist() for li, a in chosen.items()},
                   "png": str(png) if png else None})
        return
    for li, a in chosen.items():
        q = len(p.tokens) - 1
        best = np.argsort(-a[q])[:3]
        console.print(f"L{li:<3} last token attends to " + ", ".join(f"{p.tokens[j]!r} {a[q, j]:.2f}" for j in best),
                      markup=False)


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
    strength: Annotated[list[float] | None, typer.Option("--strength", help="Strengths swept (repeatable).")]
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
