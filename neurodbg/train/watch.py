"""`neurodbg.watch`: record a training run without changing it.

    with neurodbg.watch(model, optimizer, run="runs/mlp", break_on=["nonfinite"]) as w:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            w.log(loss=loss)                 # before backward: a loss breakpoint then stops before the update
            optimizer.zero_grad(); loss.backward(); optimizer.step()
        w.log(val_loss=..., val_acc=...)

A step ends with `optimizer.step()` (the watcher hooks it; without an optimizer the
loop calls `w.step_done()`). On every `every`-th step it records the learning rates,
the global gradient norm and each parameter tensor's gradient norm, and per watched
site the activation statistics of `site_stats`, and per mixture-of-experts router its
load (`router_watch`; routers are found by themselves); every `weights_every`-th recorded
step (10; and every recorded step of the first 50) also each tensor's weight norm
and update-to-weight ratio
‖Δw‖/‖w‖ (they move slowly, and the ratio needs a copy of the weights). Losses are
kept for every step. Rows are buffered and appended to the run's database every
`flush_every` steps or `flush_seconds`.

On a CPU with the C++ kernel built (`neurodbg build-kernels`; `watch_kernel`), each site's
hook is one kernel call and a recorded step one more, before the update (the gradients are
read from the parameters themselves); breakpoints, mixture-of-experts routers, a parameter
without a gradient and other devices take the general path (`site_stats`, torch's fused
norms), which records the same figures.

The watcher observes only: its hooks return nothing and never touch the tensors they
read, so a watched run is bit-identical to an unwatched one (tested). Its memory is
one copy of the parameters (for ‖Δw‖, on recorded steps), a few numbers per site and
per parameter for the current step, and the rows not yet flushed: it does not grow
with the steps. If its own storage fails it warns once and stops recording, unless
breakpoints were asked for (they need the run directory): then it raises `RunError`."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from neurodbg.errors import BreakpointHit, RunError
from neurodbg.model import Model
from neurodbg.sites.site import Site
from neurodbg.trace.expert_sites import expert_neurons
from neurodbg.train import watch_kernel
from neurodbg.train.breakpoints import BreakOn, Hit, parse_break_on, save_snapshot
from neurodbg.train.hook_slot import HookSlot
from neurodbg.train.router_watch import RouterWatch
from neurodbg.train.run_store import RunStore, ScalarRow
from neurodbg.train.run_writer import RawStep, RunWriter, SiteFigures, step_rows
from neurodbg.train.site_stats import (
    NONNEGATIVE,
    RECTIFIERS,
    SQUASHERS,
    Kind,
    StepSums,
    kind_of,
    read_step,
)
from neurodbg.train.watch_kernel import RecordBlock, SiteBlock

DENSE_START = 50       # steps whose weight norms and update ratios are recorded whenever the step is
NEVER = -(2 ** 40)      # "last fired" of a unit that has not fired yet
SKIPPED_LEAVES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten,
                  nn.Unflatten)


def default_sites(model: Model) -> list[str]:
    """Every layer's output. Where an adapter names them: each layer's neurons (`mlp.act`) and its
    residual output (`resid_out`). Any other module: the output of every activation module (what a
    layer hands on; dead and saturated units show there) and of the last module with parameters (the
    model's output); a model with no activation modules (functional activations): every leaf module
    but dropout, identity and reshapes."""
    if model.adapter is not None:
        names = [s.name for s in model.resolve("layers.*.resid_out")]
        acts = [s.name for s in model.resolve("layers.*.mlp.act")] if "layers.0.mlp.act" in model.adapter.sites \
            else []
        return [name for pair in zip(acts, names, strict=False) for name in pair] or names
    leaves = [(name, module) for name, module in model.module.named_modules()
              if name and not any(True for _ in module.children()) and not isinstance(module, SKIPPED_LEAVES)]
    activations = {name for name, module in leaves if isinstance(module, RECTIFIERS + SQUASHERS)}
    weighted = [name for name, module in leaves if any(True for _ in module.parameters(recurse=False))]
    if not activations:
        return [f"{name}:output" for name, _ in leaves]
    chosen = activations | set(weighted[-1:])
    return [f"{name}:output" for name, _ in leaves if name in chosen]


class Watcher:
    def __init__(self, model: nn.Module | Model, optimizer: torch.optim.Optimizer | None = None, *,
                 run: str | Path, every: int = 1, sites: Iterable[str] | None = None,
                 break_on: str | Iterable[str] | BreakOn | None = None,
                 on_break: Callable[[Hit], Any] | None = None, flush_every: int = 50, flush_seconds: float = 5.0,
                 weights_every: int = 10, resume: bool = False,
                 routers: Mapping[str, int] | Iterable[str] | None = None, dead_window: int = 10) -> None:
        self.model = model if isinstance(model, Model) else Model(model)
        module = self.model.module
        self.optimizer = optimizer
        if every < 1:
            raise RunError(f"every must be at least 1 (got {every})")
        if dead_window < 1:
            raise RunError(f"dead_window must be at least 1 (got {dead_window})")
        # a unit is dead when it did not fire in any of the last `dead_window` recorded steps: one batch
        # is too few rows to tell for a sparse unit, or for an expert that sees a few tokens per batch
        self.dead_window = dead_window
        self._last_fired: dict[str, np.ndarray | torch.Tensor] = {}
        self._records = 0
        self.every, self.flush_every, self.flush_seconds = every, max(1, flush_every), flush_seconds
        # weight norms and update ratios move slowly and cost a copy of the weights: every 10th recorded
        # step, and every recorded step of the first 50, where a learning rate far too high wrecks the
        # weights within a few steps
        self.weights_every = max(1, weights_every)
        self.params = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        self._names, self._tensors = [name for name, _ in self.params], [p for _, p in self.params]
        if not self.params:
            raise RunError(f"{type(module).__name__} has no trainable parameters: there is no training to watch")
        self.break_on = parse_break_on(break_on)
        self.on_break = on_break
        names = list(sites) if sites is not None else default_sites(self.model)
        resolved = self.model.resolve(names) if names else []
        self.sites: list[Site] = resolved
        modules = dict(module.named_modules())
        self.kinds: dict[str, Kind] = {s.name: kind_of(modules[s.module_path], s.name) for s in resolved}
        self.routers = RouterWatch(self.model, routers)
        self.store = RunStore.open(run, create=True)
        last = self.store.last_step()
        if last is not None and not resume:
            self.store.close()
            raise RunError(f"run {self.store.directory} already holds {last + 1} steps; use another directory "
                           f"(or resume=True to continue it)")
        self.step = 0 if last is None else last + 1
        self._site_slots: list[HookSlot] | None = None       # registered at the first arming, then put in and out
        self._handles: list[RemovableHandle] = []
        self._sums = {s.name: StepSums(self.kinds[s.name], isinstance(modules[s.module_path], NONNEGATIVE)
                                       and s.port == "output") for s in resolved}
        # on a CPU the site figures and norms go through the C++ kernel where this machine has it built
        kernel = watch_kernel.built() if all(p.device.type == "cpu" for _, p in self.params) else None
        self._fast = watch_kernel.KernelSites(kernel, self.kinds, self._tensors, self._names,
                                              len(optimizer.param_groups) if optimizer is not None else 0) \
            if kernel is not None else None
        # the usual recorded step goes whole into the kernel's recorder: one call before the update
        self._lean = self._fast is not None and optimizer is not None and not self.break_on.any \
            and not self.routers.taps
        self._lean_step: bool | None = None     # this step went into the recorder (True: with weights)
        self._lean_pending = 0                  # steps in the recorder since the last flush
        self._order: list[str] = []
        self._batch: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._extra: tuple[Any, ...] = ()
        self._in_step = False
        self._root_slots: list[HookSlot] | None = None       # the root's forward pre-hook, the optimizer's pre-hook
        self._root_armed = False
        self._loss_before_update = True      # what the loop does, learned on steps the root hook sees
        self._snapshot: list[torch.Tensor] | None = None
        self._step_figures: tuple[list[str], list[torch.Tensor], list[float], list[float], float | None] | None = None
        self._buffer: tuple[list[RawStep], list[ScalarRow]] = ([], [])
        self._last_flush = time.monotonic()
        self.recording = True
        self._storage_reported = False
        self.hit: Hit | None = None
        self._writer: RunWriter | None = None
        self.store.set_meta(model=type(module).__name__, parameters=sum(p.numel() for _, p in self.params),
                            sites=[s.name for s in self.sites], every=every, status="running",
                            break_on=self.break_on.__dict__, started=time.time(),
                            optimizer=type(optimizer).__name__ if optimizer is not None else None,
                            parameter_order=[name for name, _ in self.params], routers=self.routers.names,
                            moe_blocks=self.routers.blocks, dead_window=dead_window)

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Watcher:
        self._writer = RunWriter(self.store)
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_post_hook(self._after_update))
        self._arm()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close("broken" if isinstance(exc, BreakpointHit) else "finished" if exc is None else "failed")

    def close(self, status: str = "finished") -> None:
        for handle in self._handles:
            handle.remove()
        for slot in (self._root_slots or []) + (self._site_slots or []):
            slot.remove()
        self._handles, self._root_slots, self._site_slots, self._root_armed = [], None, None, False
        self.routers.disarm()
        self._flush(final=True, status=status)
        if self._writer is not None:
            self._writer.close()
            if self._writer.error is not None:
                self._storage_failed(self._writer.error, raising=False)
            self._writer = None
        self.store.close()

    # -- what the loop calls ------------------------------------------------------------------
    def log(self, **values: float | torch.Tensor) -> None:
        """Scalars of the current step (`loss=…` before `optimizer.step()`, or of the step just taken when
        logged after it), or validation figures (`val_loss=…, val_acc=…`)."""
        seen = self._root_armed         # does the root hook tell whether a step is under way?
        for key, raw in values.items():
            value = float(raw.detach().float().item()) if isinstance(raw, torch.Tensor) else float(raw)
            if key == "loss" and seen:
                self._loss_before_update = self._in_step
            in_step = self._in_step if seen else (key == "loss" and self._loss_before_update)
            step = max(self.step if in_step else self.step - 1, 0)
            self._buffer[1].append((step, key, value if math.isfinite(value) else None))
            if key == "loss":
                self._check_loss(value, step, after=not in_step)

    def batch(self, *tensors: Any) -> None:
        """The whole batch of this step (inputs and targets, e.g. `w.batch(x, y)`): a breakpoint saves it
        with its snapshot, so `replay` can recompute the loss. Without it only the model's inputs are
        saved (enough when the targets go into the model, as with Hugging Face models)."""
        self._extra = tensors

    def flush(self) -> None:
        """Write everything recorded so far and wait until it is on disk (readers then see it)."""
        if self._writer is None:          # closed, or never entered: nothing is pending
            return
        self._flush()
        try:
            self._writer.drain()
        except Exception as exc:
            self._storage_failed(exc, raising=True)

    def step_done(self) -> None:
        """End a step by hand (for loops without an optimizer the watcher can hook)."""
        self._end_of_step()
        self._after_update()

    # -- hooks --------------------------------------------------------------------------------
    def _recorded(self) -> bool:
        return self.recording and self.step % self.every == 0

    def _arm(self) -> None:
        """Hooks exist only during recorded steps (and, for breakpoints, on every step, to keep each
        step's batch): other steps run the bare model."""
        root = self._recorded() or self.break_on.any
        if root and self._root_slots is None:
            self._root_slots = [HookSlot(self.model.module.register_forward_pre_hook(self._on_forward,
                                                                                     with_kwargs=True))]
            if self.optimizer is not None:      # the gradients' figures, read before the update
                self._root_slots.append(HookSlot(self.optimizer.register_step_pre_hook(self._on_step_pre)))
        for slot in self._root_slots or []:
            slot.set(root)
        self._root_armed = root
        if self._recorded():
            self.routers.arm()
        else:
            self.routers.disarm()
        want = self._recorded() and bool(self.sites)
        if want and self._site_slots is None:
            modules = dict(self.model.module.named_modules())
            self._site_slots = [HookSlot(modules[site.module_path].register_forward_hook(self._site_hook(site))
                                         if site.port == "output" else
                                         modules[site.module_path].register_forward_pre_hook(self._site_input_hook(site)))
                                for site in self.sites]
        for slot in self._site_slots or []:
            slot.set(want)

    def _on_step_pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._end_of_step()

    def _on_forward(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if torch.is_grad_enabled():              # a training forward (evaluation runs under no_grad)
            self._in_step = True
            self._batch = (args, kwargs)

    def _site_hook(self, site: Site) -> Callable[..., None]:
        from neurodbg.trace.tracer import _element

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if torch.is_grad_enabled():
                self._accumulate(site.name, _element(output, site))

        if self._fast is not None and site.expert is None:
            return self._fast.hook(site)

        def expert_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if torch.is_grad_enabled():     # a routed expert's neurons, over the tokens it ran for
                with torch.no_grad():
                    self._accumulate(site.name, expert_neurons(module, args, int(site.expert or 0)).values)
        return hook if site.expert is None else expert_hook

    def _site_input_hook(self, site: Site) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if torch.is_grad_enabled() and site.index < len(args) and isinstance(args[site.index], torch.Tensor):
                self._accumulate(site.name, args[site.index])
        return hook

    def _accumulate(self, name: str, value: torch.Tensor) -> None:
        if self._fast is not None:
            self._fast.add(name, value)
            return
        sums = self._sums[name]
        if not sums.calls:
            self._order.append(name)
        sums.add(value)

    # -- the end of a step ----------------------------------------------------------------------
    def _grads(self) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor]]:
        names: list[str] = []
        params: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        for name, p in self.params:
            if p.grad is not None:
                names.append(name)
                params.append(p)
                grads.append(p.grad)
        return names, params, grads

    def _end_of_step(self) -> None:
        """Before the optimizer applies the step: gradient figures, breakpoints, the weights' copy."""
        recorded = self.recording and self.step % self.every == 0
        if not recorded and not self.break_on.any:
            return
        step = self.step
        want_weights = recorded and (step < DENSE_START or (step // self.every) % self.weights_every == 0)
        if self._lean and recorded and self._fast is not None and self.optimizer is not None \
                and self._fast.record(step, self._records, self.dead_window, want_weights,
                                      [group.get("lr", math.nan) for group in self.optimizer.param_groups]):
            self._lean_step = want_weights
            return
        names, params, grads = self._grads()
        want_weights = want_weights and bool(params)
        tensors = grads + params if want_weights else grads
        found = self._norms(tensors) if tensors else []       # one call
        if want_weights and self.optimizer is not None:
            with torch.no_grad():
                if self._snapshot is None or len(self._snapshot) != len(params):
                    self._snapshot = [torch.empty_like(p) for p in params]
                torch._foreach_copy_(self._snapshot, params)
        if self._fast is not None and recorded:
            self._fast.end_sites(self._records, self.dead_window)
        norms, weights = found[:len(grads)], found[len(grads):]
        global_norm = math.hypot(*norms) if grads else None
        if self.break_on.any:
            self._check_step(names, norms, global_norm)
        if recorded:
            self._step_figures = (names, params, norms, weights, global_norm)

    def _after_update(self, *_: Any) -> None:
        """After the optimizer's update (its post-hook): update ratios, the step's rows, the next step."""
        step, every = self.step, self.every
        if step % every and (step + 1) % every and not self.break_on.any:
            # a step between recorded ones, before another such: nothing was hooked, nothing is kept
            self.step, self._extra = step + 1, ()
            if self._buffer[1] and time.monotonic() - self._last_flush >= self.flush_seconds:
                self._flush()
            return
        was_recorded = self.recording and step % every == 0
        if self._lean_step is not None:
            if self._lean_step:
                self._fast.rec.record_deltas()      # type: ignore[union-attr]
            self._lean_step = None
            self._records += 1
            self._lean_pending += 1
        elif was_recorded and self._step_figures is not None:
            self._record_step()
        if self.routers.taps:
            self.routers.take()     # a step recorded without its figures must not leak into the next
        if self._fast is not None and was_recorded:
            self._fast.discard()
        if self._order:
            for name in self._order:            # a fresh one: the writer may still read the old
                self._sums[name] = self._sums[name].fresh()
            self._order = []
        self._in_step = False
        self._extra = ()
        self.step += 1
        if self.recording:
            if was_recorded != self._recorded():     # hooks change only where recording starts or stops
                self._arm()
            if len(self._buffer[0]) + self._lean_pending >= self.flush_every or \
                    (self._buffer[1] and time.monotonic() - self._last_flush >= self.flush_seconds):
                self._flush()

    def _record_step(self) -> None:
        """Keep the step's figures as they are; the writer thread turns them into rows (`step_rows`)."""
        assert self._step_figures is not None
        names, params, gnorms, wnorms, global_norm = self._step_figures
        self._step_figures = None
        deltas: list[float] | None = None
        if wnorms and self.optimizer is not None and self._snapshot is not None:
            with torch.no_grad():
                deltas = self._norms(torch._foreach_sub(params, self._snapshot))
        lrs = [float(group.get("lr", math.nan)) for group in self.optimizer.param_groups] \
            if self.optimizer is not None else []
        sites: list[SiteFigures] = []
        block: SiteBlock | None = None
        if self._fast is not None:
            block, self._fast.ended = self._fast.ended, None
        elif self._order:
            sums = [self._sums[n] for n in self._order]
            for name, one in zip(self._order, sums, strict=True):
                one.peak = self._fired_in_window(name, one.peak)
            if all(one.on_host for one in sums):
                # host figures: the writer thread reads them; here only the rare non-finite step is counted
                for name, one in zip(self._order, sums, strict=True):
                    bad = 0
                    figures: StepSums | tuple[float, float, int, int, float | None] = one
                    if not one.squares_finite():
                        figures, bad = _finite_figures(one)
                    one.values = []          # the writer must not keep the step's activations alive
                    sites.append((name, self.kinds[name], figures, bad, one.units))
            else:
                for name, one, figures in zip(self._order, sums, read_step(sums), strict=True):
                    bad = 0
                    if not (math.isfinite(figures[0]) and math.isfinite(figures[1])):
                        figures, bad = _finite_figures(one, figures)
                    sites.append((name, self.kinds[name], figures, bad, one.units))
        self._buffer[0].append(RawStep(self.step, time.time(), global_norm, names, gnorms, wnorms, deltas or [], lrs,
                                       block or sites, self.routers.take() if self.routers.taps else []))
        self._records += 1

    def _fired_in_window(self, name: str, peak: np.ndarray | torch.Tensor | None) -> np.ndarray | torch.Tensor | None:
        """The step's per-unit peaks (> 0: fired) become "fired in one of the last `dead_window` recorded
        steps" (1 or 0), from each unit's last recorded step with a firing; on the peaks' own device."""
        if peak is None:
            return None
        now = self._records
        last = self._last_fired.get(name)
        if isinstance(peak, torch.Tensor):
            if not isinstance(last, torch.Tensor) or last.shape != peak.shape or last.device != peak.device:
                last = torch.full(peak.shape, NEVER, dtype=torch.long, device=peak.device)
            last = torch.where(peak > 0, now, last)
            fired: np.ndarray | torch.Tensor = (last > now - self.dead_window).to(torch.float32)
        else:
            if not isinstance(last, np.ndarray) or last.shape != peak.shape:
                last = np.full(peak.shape, NEVER, dtype=np.int64)
            last = np.where(peak > 0, now, last)
            fired = (last > now - self.dead_window).astype(np.float32)
        self._last_fired[name] = last
        return fired

    def _norms(self, tensors: Sequence[torch.Tensor]) -> list[float]:
        if self._fast is not None:
            norms = self._fast.norms(list(tensors))
            if norms is not None:
                return norms
        return _norms(tensors)

    # -- breakpoints --------------------------------------------------------------------------
    def _check_loss(self, value: float, step: int, *, after: bool) -> None:
        rule = self.break_on
        if rule.nonfinite and not math.isfinite(value):
            self._hit(Hit(step, "nonfinite_loss", None, f"the loss is {value}"), after=after)
        elif rule.loss is not None and value > rule.loss:
            self._hit(Hit(step, "loss", None, f"the loss {value:.6g} is above {rule.loss:g}"), after=after)

    def _check_step(self, names: list[str], norms: list[float], global_norm: float | None) -> None:
        rule = self.break_on
        if rule.nonfinite:
            bad_site = self._first_bad_site()
            if bad_site is not None:
                self._hit(Hit(self.step, "nonfinite_activation", bad_site, "non-finite activations"))
            if global_norm is not None and not math.isfinite(global_norm):
                first = next(n for n, x in zip(names, norms, strict=True) if not math.isfinite(x))
                module = self._diagnostic_forward() or first.rsplit(".", 1)[0]
                self._hit(Hit(self.step, "nonfinite_gradient", module,
                              f"non-finite gradients (first parameter: {first})"))
        if rule.grad_norm is not None and global_norm is not None and global_norm > rule.grad_norm:
            self._hit(Hit(self.step, "grad_norm", None,
                          f"the gradient norm {global_norm:.6g} is above {rule.grad_norm:g}"))

    def _first_bad_site(self) -> str | None:
        """The first site, in forward order, with a NaN or infinity in its output this step."""
        if self._fast is not None:
            return self._fast.first_nonfinite()
        if not self._order:
            return None
        figures = read_step([self._sums[n] for n in self._order])
        return next((name for name, (total, squares, *_) in zip(self._order, figures, strict=True)
                     if not (math.isfinite(total) and math.isfinite(squares)) and self._sums[name].nonfinite()), None)

    def _diagnostic_forward(self) -> str | None:
        """On a step that was not recorded, run its batch once more (no gradients) with every site
        hooked, to name the first one whose output is not finite."""
        if self._batch is None or not self.sites:
            return None
        seen: list[str] = []
        handles = []
        modules = dict(self.model.module.named_modules())
        from neurodbg.trace.tracer import _element

        def watcher(site: Site) -> Callable[..., None]:
            def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
                if not seen and not bool(torch.isfinite(_element(output, site)).all()):
                    seen.append(site.name)
            return hook

        for site in self.sites:
            if site.port == "output" and site.expert is None:
                handles.append(modules[site.module_path].register_forward_hook(watcher(site)))
        try:
            with torch.no_grad():
                args, kwargs = self._batch
                self.model.module(*args, **kwargs)
        except Exception:       # a diagnosis must not hide the breakpoint itself
            return None
        finally:
            for handle in handles:
                handle.remove()
        return seen[0] if seen else None

    def _hit(self, hit: Hit, *, after: bool = False) -> None:
        if after:
            hit.state = "after the update (the loss was logged after optimizer.step())"
        if hit.module is None and hit.reason in ("nonfinite_loss",):
            hit.module = self._first_bad_site() or self._diagnostic_forward()
        self.hit = hit
        try:
            if self._writer is not None:
                self._writer.drain()          # the store's connection is the writer's until then
            directory = save_snapshot(self.store.directory, hit, self._batch, self._extra, self.model.module,
                                      self.optimizer)
            self.store.add_break(hit.step, hit.reason, hit.module, hit.detail, str(directory.name))
        except Exception as exc:
            raise RunError(f"breakpoint at step {hit.step} ({hit.detail}), but its snapshot could not be saved "
                           f"in {self.store.directory}: {exc}") from None
        if self.on_break is not None:
            self.on_break(hit)
            return
        raise BreakpointHit(hit.message() + f"; saved in {self.store.directory / (hit.directory or '')}", hit)

    # -- storage ------------------------------------------------------------------------------
    def _flush(self, *, final: bool = False, status: str | None = None) -> None:
        """Hand the buffered figures to the writer thread (or write them here when it is not running)."""
        raw: list[RawStep | RecordBlock]
        raw, scalars = self._buffer     # type: ignore[assignment]
        self._buffer = ([], [])
        self._last_flush = time.monotonic()
        if self._fast is not None and self._lean_pending:
            block = self._fast.take()
            raw = [*raw, block] if block is not None else raw
            self._lean_pending = 0
        if not self.recording and not final:
            return
        meta = {"status": status} if status else {}
        try:
            if self._writer is not None:
                self._writer.submit((raw, scalars, meta))
            else:
                self.store.append(*step_rows(raw, scalars), meta=meta)
        except Exception as exc:       # whatever it is, the watcher must not be what breaks the training
            self._storage_failed(exc, raising=not final)

    def _storage_failed(self, exc: BaseException, *, raising: bool) -> None:
        """Recording stops with one warning; with breakpoints asked for, the run cannot go on unwatched."""
        reported, self._storage_reported = self._storage_reported, True
        if self.break_on.any and raising and not reported:
            self.recording = False
            raise RunError(f"cannot write the run {self.store.directory}: {exc}") from None
        if self.recording and not reported:
            warnings.warn(f"neurodbg: cannot write the run {self.store.directory} ({exc}); recording stopped, "
                          f"training goes on", RuntimeWarning, stacklevel=3)
        self.recording = False
        self.routers.disarm()
        for slot in self._site_slots or []:
            slot.detach()


def _finite_figures(one: StepSums, figures: tuple[float, float, int, int, float | None] | None = None
                    ) -> tuple[tuple[float, float, int, int, float | None], int]:
    """A step's figures whose float32 sums are not finite, and how many values are NaN or infinite:
    when none is (huge values overflowed the sums) the sums are redone in float64."""
    total, squares, count, fired, saturated = figures if figures is not None else read_step([one])[0]
    bad = one.nonfinite()
    if bad == 0:
        total, squares = one.exact()
    return (total, squares, count, fired, saturated), bad


@torch.no_grad()
def _norms(tensors: Sequence[torch.Tensor]) -> list[float]:
    """Each tensor's L2 norm: one fused call and one transfer; a norm that overflows its dtype (huge but
    finite values) is computed again in float64, so an infinite norm means a non-finite element."""
    norms = torch.stack(list(torch._foreach_norm(list(tensors)))).tolist()
    for i, n in enumerate(norms):
        if not math.isfinite(n) and bool(torch.isfinite(tensors[i]).all()):
            norms[i] = float(torch.linalg.vector_norm(tensors[i], dtype=torch.float64))
    return norms


def watch(model: nn.Module | Model, optimizer: torch.optim.Optimizer | None = None, *, run: str | Path,
          every: int = 1, sites: Iterable[str] | None = None, break_on: str | Iterable[str] | BreakOn | None = None,
          on_break: Callable[[Hit], Any] | None = None, flush_every: int = 50, flush_seconds: float = 5.0,
          weights_every: int = 10, resume: bool = False,
          routers: Mapping[str, int] | Iterable[str] | None = None, dead_window: int = 10) -> Watcher:
    """A context manager that records a training run into `run` (see the module docstring)."""
    return Watcher(model, optimizer, run=run, every=every, sites=sites, break_on=break_on, on_break=on_break,
                   flush_every=flush_every, flush_seconds=flush_seconds, weights_every=weights_every, resume=resume,
                   routers=routers, dead_window=dead_window)
