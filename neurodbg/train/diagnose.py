"""Findings: a run's records turned into statements a person can act on.

Each rule reads the series of `records.RunRecords` and returns findings that say
what is wrong, where, since which step, the figures behind it and what usually
fixes it. The thresholds are named in `Thresholds` (their defaults and the reason
for each are documented there); every rule asks for evidence over several
recorded steps, so one noisy batch does not make a finding.

    kind                  when (defaults)
    nonfinite             a loss, gradient or activation was NaN or infinite
    exploding_gradients   the global gradient norm grew above 100x its early median (and above 10)
    lr_too_high           updates above 5 % of the weights per step (median over tensors and steps)
                          while the loss did not fall, or the loss rose to 1.5x its start
    lr_too_low            updates below 1e-5 of the weights per step while the loss fell less than 5 %
    vanishing_gradients   a layer's gradient, relative to its weights, below 1 % of the last layer's
                          (routed experts left out: they sit side by side)
    dead_units            over half of a rectifier layer's units did not fire in any of the last 10
                          recorded steps (the watcher's `dead_window`), for the last 5 records
    saturation            over half of a sigmoid/tanh layer's values saturated, in the last 5 records
    overfitting           validation loss 10 % above its best, two evaluations on, while training loss fell
    underfitting          after 50 steps the training loss is still above 90 % of where it started
    expert_collapse       one expert of an MoE router takes over 80 % of its routed slots, pooled over the
                          last 10 % of the records (at least 5)
    idle_experts          an expert gets under 1 % of a router's slots at 8 experts (0.08 / E in general)
                          over the same window

The two MoE rules use `analyze.router_health`'s thresholds (the seeds': warn above 80 %
for one expert, flag experts under 1 %); the step they give is where the last stretch
began, measured with the share pooled over `persist` records at a time."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from neurodbg.train.records import ParamSeries, RouterSeries, RunRecords

KINDS = ("vanishing_gradients", "exploding_gradients", "dead_units", "saturation", "nonfinite", "lr_too_high",
         "lr_too_low", "overfitting", "underfitting", "expert_collapse", "idle_experts")


@dataclass(frozen=True)
class Thresholds:
    early: int = 5                  # records that make a baseline (the first ones)
    explode_factor: float = 100.0   # gradient norm growth over the baseline that counts as exploding...
    explode_min: float = 10.0       # ...and an absolute floor, so tiny early norms do not trigger it
    ratio_high: float = 0.05        # update/weight per step; ~1e-3 is the usual healthy figure
    ratio_low: float = 1e-5
    loss_rise: float = 1.5          # the loss at 1.5x its start: diverging
    loss_flat: float = 0.05         # the loss fell less than 5 %: not learning
    vanish_ratio: float = 0.01      # relative gradient of a layer vs the last layer's
    dead_share: float = 0.5
    saturated_share: float = 0.5
    persist: int = 5                # records a dead or saturated layer must stay so
    overfit_rise: float = 0.10
    overfit_after: int = 2          # evaluations after the best one
    underfit_steps: int = 50
    underfit_level: float = 0.9
    collapse_share: float = 0.8     # one expert's share of a router's slots
    idle_fraction: float = 0.08     # an expert under idle_fraction / experts of the slots is idle
    moe_window: float = 0.1         # share of the last records pooled for the MoE verdicts


@dataclass
class Finding:
    kind: str
    where: list[str]
    step: int
    message: str
    evidence: dict[str, Any]
    advice: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Rule = Callable[[RunRecords, Thresholds], list[Finding]]


# -- helpers ----------------------------------------------------------------------------------------
def _finite(values: list[tuple[int, float | None]]) -> list[tuple[int, float]]:
    return [(s, v) for s, v in values if v is not None and math.isfinite(v)]


def _window(values: list[float], share: float = 0.1, least: int = 3) -> tuple[float, float]:
    """(mean of the first share, mean of the last share) of a series."""
    n = max(least, int(len(values) * share))
    return statistics.fmean(values[:n]), statistics.fmean(values[-n:])


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _weights(records: RunRecords) -> list[ParamSeries]:
    """Weight matrices and kernels (biases and norm gains carry no depth signal), in model order."""
    return [p for p in records.params.values() if not p.name.endswith("bias") and "norm" not in p.name.lower()
            and any(w is not None for w in p.weight_norm)]


def _rounded(x: float) -> float:
    return float(f"{x:.4g}")


# -- rules ----------------------------------------------------------------------------------------
def nonfinite(records: RunRecords, t: Thresholds) -> list[Finding]:
    # (step, rank, where, sentence): at the first step, what names a module best wins: a breakpoint's
    # finding, then an activation, then a gradient, then the loss
    firsts: list[tuple[int, int, str, str]] = []
    for hit in records.breaks:
        if hit["reason"].startswith("nonfinite"):
            where = hit["module"] or "loss"
            firsts.append((hit["step"], 0, where, f"a breakpoint stopped the run at step {hit['step']}: "
                                                 f"{hit['detail']} (first bad module: {where})"))
    for site in records.sites.values():
        bad = [s for s, n in zip(site.steps, site.nonfinite, strict=True) if n > 0]
        if bad:
            firsts.append((bad[0], 1, site.name, f"the output of {site.name} became NaN or infinite at step {bad[0]}"))
    for p in records.params.values():
        bad = [s for s, g in zip(p.steps, p.grad_norm, strict=True) if g is None]
        if bad:
            firsts.append((bad[0], 2, p.name.rsplit(".", 1)[0],
                           f"the gradient of {p.name} became NaN or infinite at step {bad[0]}"))
    loss = [s for s, v in records.series("loss") if v is None]
    if loss:
        firsts.append((loss[0], 3, "loss", f"the training loss became NaN or infinite at step {loss[0]}"))
    if not firsts:
        return []
    step, _, where, sentence = min(firsts)
    return [Finding("nonfinite", [where], step, sentence,
                    {"first": [{"step": s, "where": w} for s, _, w, _ in sorted(firsts)[:8]]},
                    "Lower the learning rate or clip gradients (torch.nn.utils.clip_grad_norm_(params, 1.0)); "
                    "look for log(0), division by zero or overflow in the loss and inputs; set "
                    "break_on=['nonfinite'] and neurodbg.replay(run, step, model) to inspect the step")]


def exploding_gradients(records: RunRecords, t: Thresholds) -> list[Finding]:
    norms = _finite(records.series("grad_norm"))
    if len(norms) <= t.early:
        return []
    base = _median([v for _, v in norms[:t.early]])
    over = [(s, v) for s, v in norms[t.early:] if v > t.explode_factor * base and v > t.explode_min]
    if not over:
        return []
    step, peak = over[0][0], max(v for _, v in over)
    growth = []
    for p in records.params.values():
        g = [(s, v) for s, v in zip(p.steps, p.grad_norm, strict=True) if v is not None]
        if len(g) > t.early:
            start = _median([v for _, v in g[:t.early]]) or 1e-30
            growth.append((max(v for _, v in g) / start, p.name))
    where = list(dict.fromkeys(name.rsplit(".", 1)[0] for _, name in sorted(growth, reverse=True)))[:3]
    return [Finding("exploding_gradients", where, step,
                    f"the gradient norm grew from {base:.3g} to {peak:.3g} (x{peak / base:.3g}) from step {step}",
                    {"baseline_grad_norm": _rounded(base), "peak_grad_norm": _rounded(peak),
                     "growth": _rounded(peak / base), "fastest_growing": where},
                    "Clip gradients at 1.0 (torch.nn.utils.clip_grad_norm_), lower the learning rate or add a "
                    "warm-up, add normalisation layers (LayerNorm/BatchNorm) or residual connections")]


def _ratios(records: RunRecords, summary: Callable[[list[float]], float] = _median) -> list[tuple[int, float]]:
    """(step, update/weight ratio over the weight tensors: their median, or `summary`) per recorded step."""
    by_step: dict[int, list[float]] = {}
    for p in _weights(records) or list(records.params.values()):
        for s, r in zip(p.steps, p.update_ratio, strict=True):
            if r is not None and math.isfinite(r):
                by_step.setdefault(s, []).append(r)
    return [(s, summary(v)) for s, v in sorted(by_step.items())]


def learning_rate(records: RunRecords, t: Thresholds) -> list[Finding]:
    """Too high: in the first records (before a divergence wrecks the weights) the typical tensor
    moves by more than `ratio_high` of itself per step, and the loss did not fall or diverged.
    Too low: even the fastest-moving tensor moves by less than `ratio_low` and the loss is flat
    (the fastest, so a layer whose gradient vanished does not pass for a small learning rate)."""
    losses = _finite(records.series("loss"))
    typical = _ratios(records)
    fastest = _ratios(records, max)
    if len(losses) < 2 * 3 or not typical:
        return []
    first, (start, end) = losses[0][1], _window([v for _, v in losses])
    peak = max(v for _, v in losses)
    early = _median([r for _, r in typical[:t.early]])
    top = _median([r for _, r in fastest])
    lr = records.series("lr/0")
    evidence = {"early_update_ratio": _rounded(early), "fastest_update_ratio": _rounded(top),
                "loss_start": _rounded(start), "loss_end": _rounded(end), "learning_rate": lr[0][1] if lr else None}
    diverged = peak > t.loss_rise * first or any(v is None for _, v in records.series("loss"))
    if (early > t.ratio_high and end >= (1 - t.loss_flat) * start) or (diverged and early > t.ratio_high / 10):
        step = next((s for s, r in typical if r > t.ratio_high), typical[0][0])
        evidence["loss_peak"] = _rounded(peak)
        return [Finding("lr_too_high", ["optimizer"], step,
                        f"each step changes the weights by {early:.2g} of their size (the usual is ~1e-3) and the "
                        f"loss went from {first:.3g} to {end:.3g}" + (f", peaking at {peak:.3g}" if diverged else ""),
                        evidence, "Lower the learning rate 10x (or use a warm-up), clip gradients at 1.0; aim for "
                                  "update/weight ratios near 1e-3")]
    if top < t.ratio_low and end > (1 - t.loss_flat) * start:
        return [Finding("lr_too_low", ["optimizer"], typical[0][0],
                        f"each step changes the weights by at most {top:.2g} of their size (the usual is ~1e-3) and "
                        f"the loss went from {start:.3g} to {end:.3g}",
                        evidence, "Raise the learning rate (try 10x), or use Adam; aim for update/weight ratios "
                                  "near 1e-3")]
    return []


def vanishing_gradients(records: RunRecords, t: Thresholds) -> list[Finding]:
    # routed experts sit side by side, not in depth, and their gradients scale with the tokens they get
    # (the MoE rules judge that): they are left out
    blocks = tuple(f"{b}." for b in records.meta.get("moe_blocks") or [])
    layers = [p for p in _weights(records) if not (blocks and p.name.startswith(blocks))]
    if len(layers) < 3:
        return []

    def relative(p: ParamSeries) -> float:
        pairs = [g / w for g, w in zip(p.grad_norm, p.weight_norm, strict=True) if g is not None and w]
        return _median(pairs[len(pairs) // 2:]) if pairs else float("nan")

    rel = [(p.name, relative(p)) for p in layers]
    last = rel[-1][1]
    if not last or not math.isfinite(last):
        return []
    # an exactly zero gradient is no gradient at all (dead units upstream, an unused layer), not a vanishing one
    weak = [(name, r / last) for name, r in rel[:-1] if math.isfinite(r) and 0 < r / last < t.vanish_ratio]
    if not weak:
        return []
    step = layers[0].steps[len(layers[0].steps) // 2] if layers[0].steps else 0
    where = [name.rsplit(".", 1)[0] for name, _ in weak]
    smallest = min(weak, key=lambda x: x[1])
    return [Finding("vanishing_gradients", where, records.recorded_steps[0] if records.recorded_steps else step,
                    f"the gradients of {len(weak)} of {len(layers)} layers are under {t.vanish_ratio:g} of the last "
                    f"layer's (relative to their weights); {smallest[0]} gets {smallest[1]:.2g} of it",
                    {"relative_to_last_layer": {name: _rounded(r / last) for name, r in rel}},
                    "Use ReLU-family activations with He (Kaiming) initialisation instead of sigmoid/tanh, add "
                    "normalisation layers or residual connections, or make the network shallower")]


def _persistent(series: list[float | None], level: float, n: int) -> int | None:
    """Index where the series rose to `level` and stayed there through its last `n` values, else None."""
    values = [v if v is not None else 0.0 for v in series]
    if len(values) < n or min(values[-n:]) < level:
        return None
    i = len(values) - 1
    while i > 0 and values[i - 1] >= level:
        i -= 1
    return i


def _persistent_shares(records: RunRecords, attr: str, level: float, t: Thresholds,
                       make: Callable[[Any, float, int], Finding]) -> list[Finding]:
    """One finding per site whose share (`attr`: dead or saturated) reached `level` and stayed there."""
    out = []
    for site in records.sites.values():
        shares = getattr(site, attr)
        if not any(v is not None for v in shares):
            continue
        start = _persistent(shares, level, min(t.persist, len(shares)))
        if start is not None:
            out.append(make(site, shares[-1] or 0.0, site.steps[start]))
    return out


def dead_units(records: RunRecords, t: Thresholds) -> list[Finding]:
    return _persistent_shares(records, "dead", t.dead_share, t, lambda site, last, since: Finding(
        "dead_units", [site.name], since,
        f"{last:.0%} of the {site.units} units of {site.name} never fire (no positive value in "
        f"{records.meta.get('dead_window', 1)} recorded steps running) since step {since}",
        {"dead_share": _rounded(last), "units": site.units, "since_step": since, "mean_activation": site.mean[-1]},
        "Check the layer's initialisation (He/Kaiming for ReLU; a large negative bias kills units), lower the "
        "learning rate, or use LeakyReLU/GELU"))


def saturation(records: RunRecords, t: Thresholds) -> list[Finding]:
    return _persistent_shares(records, "saturated", t.saturated_share, t, lambda site, last, since: Finding(
        "saturation", [site.name], since,
        f"{last:.0%} of the values of {site.name} sit in the flat ends of the activation since step {since}, "
        f"where almost no gradient passes",
        {"saturated_share": _rounded(last), "since_step": since},
        "Normalise the layer's inputs (BatchNorm/LayerNorm), use smaller initial weights (Xavier/Glorot for "
        "sigmoid/tanh) or ReLU-family activations, lower the learning rate"))


def overfitting(records: RunRecords, t: Thresholds) -> list[Finding]:
    val = _finite(records.series("val_loss"))
    train = _finite(records.series("loss"))
    if len(val) < t.overfit_after + 2 or len(train) < 6:
        return []
    best_i = min(range(len(val)), key=lambda i: val[i][1])
    best_step, best = val[best_i]
    after = val[best_i + 1:]
    worse = [(s, v) for s, v in after if v > best * (1 + t.overfit_rise)]
    if len(after) < t.overfit_after or not worse or val[-1][1] <= best * (1 + t.overfit_rise):
        return []
    train_at_best = _median([v for s, v in train if abs(s - best_step) <= max(1, len(train) // 50)]) \
        if train else float("nan")
    train_end = _window([v for _, v in train])[1]
    if not train_end < train_at_best:
        return []
    return [Finding("overfitting", ["model"], best_step,
                    f"the validation loss was best at step {best_step} ({best:.3g}) and rose to {val[-1][1]:.3g} "
                    f"while the training loss kept falling ({train_at_best:.3g} -> {train_end:.3g})",
                    {"best_val_loss": _rounded(best), "best_step": best_step, "last_val_loss": _rounded(val[-1][1]),
                     "train_loss_at_best": _rounded(train_at_best), "train_loss_end": _rounded(train_end)},
                    f"Stop at step {best_step} (early stopping), get more training data or augment it, add weight "
                    f"decay or dropout, or use a smaller model")]


def underfitting(records: RunRecords, t: Thresholds) -> list[Finding]:
    train = _finite(records.series("loss"))
    if records.steps_seen < t.underfit_steps or len(train) < 6:
        return []
    start, end = _window([v for _, v in train])
    if end <= t.underfit_level * start:
        return []
    return [Finding("underfitting", ["model"], train[0][0],
                    f"after {records.steps_seen} steps the training loss is still {end:.3g}, "
                    f"{end / start:.0%} of where it started ({start:.3g})",
                    {"loss_start": _rounded(start), "loss_end": _rounded(end), "steps": records.steps_seen},
                    "See the other findings for the cause; otherwise train longer, raise the learning rate, or "
                    "use a larger model")]


def _stretch_start(router: RouterSeries, holds: Callable[[list[float]], bool], n: int) -> int:
    """The step where the last stretch of records began over which `holds` is true of the shares
    pooled over `n` records at a time (the end of the series is known to hold)."""
    i = len(router.counts)
    while i > n and holds(router.shares(i - 1 - n, i - 1)):
        i -= 1
    return router.steps[max(i - n, 0)]


def _router_window(router: RouterSeries, t: Thresholds) -> int:
    return min(len(router.counts), max(t.persist, int(len(router.counts) * t.moe_window)))


MOE_ADVICE = ("Add a load-balancing loss (the seeds' α·CV² of the experts' importance with α 0.01-0.1, or the "
              "Switch Transformer's auxiliary loss: output_router_logits=True with router_aux_loss_coef for "
              "transformers' MoE models), a capacity factor of 1.0-1.5, router noise or expert dropout; or route "
              "each token to two experts")


def expert_collapse(records: RunRecords, t: Thresholds) -> list[Finding]:
    out = []
    for router in records.routers.values():
        n = _router_window(router, t)
        if n < min(t.persist, 2):
            continue
        shares = router.shares(len(router.counts) - n)
        top = max(range(router.experts), key=lambda e: shares[e])
        if shares[top] <= t.collapse_share:
            continue
        def held(shares: list[float], top: int = top) -> bool:
            return shares[top] > t.collapse_share

        since = _stretch_start(router, held, min(t.persist, n))
        out.append(Finding(
            "expert_collapse", [router.name], since,
            f"expert {top} of {router.name} takes {shares[top]:.0%} of its tokens (of {router.experts} experts, "
            f"top-{router.top_k}) since step {since}: the others are barely trained",
            {"expert": top, "share": _rounded(shares[top]), "shares": [_rounded(x) for x in shares],
             "experts": router.experts, "top_k": router.top_k, "records_pooled": n,
             "tokens_pooled": sum(router.tokens[-n:])}, MOE_ADVICE))
    return out


def idle_experts(records: RunRecords, t: Thresholds) -> list[Finding]:
    out = []
    for router in records.routers.values():
        n = _router_window(router, t)
        if n < min(t.persist, 2):
            continue
        level = t.idle_fraction / router.experts
        shares = router.shares(len(router.counts) - n)
        idle = [e for e in range(router.experts) if shares[e] < level]
        if not idle:
            continue
        def stayed(shares: list[float], idle: list[int] = idle, level: float = level) -> bool:
            return all(shares[e] < level for e in idle)

        since = _stretch_start(router, stayed, min(t.persist, n))
        out.append(Finding(
            "idle_experts", [router.name], since,
            f"{len(idle)} of the {router.experts} experts of {router.name} get under {level:.1%} of its tokens "
            f"each (experts {', '.join(map(str, idle))}) since step {since}",
            {"idle": idle, "level": _rounded(level), "shares": [_rounded(x) for x in shares],
             "experts": router.experts, "top_k": router.top_k, "records_pooled": n}, MOE_ADVICE))
    return out


RULES: tuple[Rule, ...] = (nonfinite, exploding_gradients, learning_rate, vanishing_gradients, dead_units,
                           saturation, overfitting, underfitting, expert_collapse, idle_experts)


def diagnose(records: RunRecords, thresholds: Thresholds | None = None) -> list[Finding]:
    t = thresholds or Thresholds()
    findings = [f for rule in RULES for f in rule(records, t)]
    return sorted(findings, key=lambda f: (f.step, KINDS.index(f.kind)))
