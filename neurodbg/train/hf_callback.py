"""`NeurodbgCallback`: watch a Hugging Face `Trainer` run.

    trainer = Trainer(model=model, args=args, train_dataset=ds, eval_dataset=ev,
                      callbacks=[NeurodbgCallback(run="runs/ft", every=10)])

The callback opens a `Watcher` on the Trainer's model and optimizer when training
begins (so gradients, update ratios and activations are recorded per optimizer
step), passes the Trainer's logs on (`loss` as the training loss, `eval_loss` as
`val_loss`, `eval_accuracy` as `val_acc`, everything else under its own name) and
closes the run when training ends. A breakpoint stops the Trainer with
`BreakpointHit`, as in a plain loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from neurodbg.train.watch import Watcher

RENAMED = {"eval_loss": "val_loss", "eval_accuracy": "val_acc"}
SKIPPED = {"epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second",
           "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "step"}


class NeurodbgCallback(TrainerCallback):
    def __init__(self, run: str | Path, **watch_options: Any) -> None:
        self.run = run
        self.options = watch_options
        self.watcher: Watcher | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, optimizer: Any = None, **kwargs: Any) -> None:
        inner = getattr(optimizer, "optimizer", optimizer)    # accelerate's wrapper steps the real one
        self.watcher = Watcher(model, inner, run=self.run, **self.options).__enter__()

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if self.watcher is None or not logs:
            return
        values = {RENAMED.get(k, k): float(v) for k, v in logs.items()
                  if k not in SKIPPED and isinstance(v, (int, float))}
        loss = values.pop("loss", None)
        if values:
            self.watcher.log(**values)
        if loss is not None:      # the Trainer's loss is the mean since its last log: the step just taken
            self.watcher.log(loss=loss)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.watcher is not None:
            self.watcher.close("finished")
            self.watcher = None
