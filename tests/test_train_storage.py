"""A run on disk: readable while training goes on, losing at most its last interval
to a SIGKILL, and never the reason a training fails (a full disk is one warning,
unless breakpoints need the run); exported to TensorBoard's own format."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from neurodbg.train.digits import digits_data, mlp, train
from neurodbg.train.run_store import RunStore
from neurodbg.train.runs import read
from neurodbg.train.tensorboard_export import export_tensorboard

CHILD = Path(__file__).with_name("train_child.py")


def _start(run: Path, steps: int, *extra: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(CHILD), str(run), str(steps), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)  # type: ignore[call-overload]


def test_a_run_is_readable_while_training_and_survives_sigkill(tmp_path: Path) -> None:
    run = tmp_path / "run"
    child = _start(run, 10_000, "--slow", "0.01")
    seen = -1
    try:
        assert child.stdout is not None
        while seen < 45:
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else ""
            seen = int(line.split()[1])
        store = RunStore.open(run)                     # a reader while the writer is busy
        live = store.last_step()
        assert store.get("status") == "running" and live is not None and live >= 19
        store.close()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    store = RunStore.open(run)                         # intact after the kill (quick_check on open)
    last = store.last_step()
    steps = [s for s, _ in store.steps()]
    losses = store.scalars()["loss"]
    store.close()
    assert last is not None and steps == list(range(last + 1))
    # flushes every 10 steps: at most the interval under way and the one being written are lost
    assert last >= seen - 2 * 10
    assert [s for s, _ in losses] == list(range(len(losses))) and len(losses) >= last + 1


def _limited(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_is_one_warning_and_training_goes_on(tmp_path: Path) -> None:
    child = _start(tmp_path / "run", 400, "--flush-every", "5", preexec_fn=_limited(160 << 10))
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    assert out.splitlines()[-1] == "step 399"                  # every step ran
    warnings = [line for line in err.splitlines() if "neurodbg: cannot write the run" in line]
    assert len(warnings) == 1 and "recording stopped, training goes on" in warnings[0], err
    assert "Traceback" not in err
    records = read(tmp_path / "run")                          # what was written before is intact
    assert 0 < len(records.recorded_steps) < 400
    assert records.recorded_steps == list(range(len(records.recorded_steps)))


def test_a_full_disk_with_breakpoints_stops_with_one_line(tmp_path: Path) -> None:
    child = _start(tmp_path / "run", 400, "--break", "--flush-every", "5", preexec_fn=_limited(160 << 10))
    _, err = child.communicate(timeout=300)
    assert child.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write the run"), err


def test_tensorboard_reads_the_exported_run(tmp_path: Path) -> None:
    net = mlp([64, 32, 10])
    train(net, torch.optim.Adam(net.parameters(), 1e-3), digits_data(), steps=30, val_every=10, run=tmp_path / "run")
    records = read(tmp_path / "run")
    directory, written = export_tensorboard(records, tmp_path / "tb")
    events = EventAccumulator(str(directory))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss", "val_loss", "val_acc", "grad_norm", "lr/0", "grad_norm/0.weight", "update_ratio/0.weight",
            "dead/1:output"} <= set(tags)
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [s for s, _ in records.series("loss")]
    assert [e.value for e in loss] == [float(torch.tensor(v, dtype=torch.float32)) for _, v in records.series("loss")]
    assert written == sum(len(events.Scalars(t)) for t in tags)
    assert os.listdir(directory)
