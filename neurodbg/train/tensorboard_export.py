"""A run as TensorBoard event files, for people who read their runs there: every
scalar (loss, validation figures, learning rates, the global gradient norm), and per
parameter tensor and watched site their series under `grad_norm/`, `weight_norm/`,
`update_ratio/`, `act_mean/`, `act_std/`, `dead/`, `saturated/`. Written with
`torch.utils.tensorboard`'s `SummaryWriter`."""

from __future__ import annotations

from pathlib import Path

from neurodbg.errors import RunError
from neurodbg.train.records import RunRecords


def export_tensorboard(records: RunRecords, directory: str | Path) -> tuple[Path, int]:
    """Write the event files into `directory`; returns it and the number of values written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RunError("TensorBoard export needs the tensorboard package: pip install tensorboard") from None
    out = Path(directory).expanduser()
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file, not a directory for event files")
    written = 0
    try:
        writer = SummaryWriter(log_dir=str(out))
    except OSError as exc:
        raise RunError(f"cannot write TensorBoard files in {out}: {exc.strerror or exc}") from None
    with writer:
        for key, values in records.scalars.items():
            for step, value in values:
                if value is not None:
                    writer.add_scalar(key, value, step)
                    written += 1
        for param in records.params.values():
            for tag, series in (("grad_norm", param.grad_norm), ("weight_norm", param.weight_norm),
                                ("update_ratio", param.update_ratio)):
                for step, value in zip(param.steps, series, strict=True):
                    if value is not None:
                        writer.add_scalar(f"{tag}/{param.name}", value, step)
                        written += 1
        for site in records.sites.values():
            for tag, series in (("act_mean", site.mean), ("act_std", site.std), ("dead", site.dead),
                                ("saturated", site.saturated)):
                for step, value in zip(site.steps, series, strict=True):
                    if value is not None:
                        writer.add_scalar(f"{tag}/{site.name}", value, step)
                        written += 1
    return out, written
