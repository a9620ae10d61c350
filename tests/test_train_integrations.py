"""The watcher inside a real `transformers.Trainer`, and Optuna searches on digits pruned
by the watcher's findings: in a real SQLite storage, resumed after a kill, shared by
two worker processes, reported by `neurodbg runs study`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import transformers

from neurodbg.errors import RunError
from neurodbg.train.hf_callback import NeurodbgCallback
from neurodbg.train.runs import findings, read
from neurodbg.train.study import DigitsSearch, search_digits, study_report

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))
# absurd learning rates (Adam up to 10) next to good ones, 2-4 hidden layers
SEARCH = DigitsSearch(lr_low=1e-4, lr_high=10.0, max_layers=4, steps=300)


class TokenData(torch.utils.data.Dataset):
    def __init__(self, n: int, vocab: int, length: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def test_a_real_trainer_is_watched(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM(config)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=12, per_device_train_batch_size=4,
                                          learning_rate=1e-3, logging_steps=2, eval_strategy="steps", eval_steps=6,
                                          save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
    callback = NeurodbgCallback(run=tmp_path / "run", every=2)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=TokenData(64, 64),
                                   eval_dataset=TokenData(16, 64, seed=1), callbacks=[callback])
    trainer.train()
    records = read(tmp_path / "run")
    assert records.meta["status"] == "finished"
    assert records.recorded_steps == list(range(0, 12, 2))                 # every 2nd optimizer step
    losses = records.series("loss")
    assert [s for s, _ in losses] == [1, 3, 5, 7, 9, 11]                   # the Trainer logs after steps 2, 4, ...
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert [v for _, v in losses] == pytest.approx(logged)
    assert [s for s, _ in records.series("val_loss")] == [5, 11]
    sites = list(records.sites)
    assert sites == ["layers.0.mlp.act", "layers.0.resid_out", "layers.1.mlp.act", "layers.1.resid_out"]
    assert all(p.grad_norm[0] is not None for p in records.params.values())
    assert all(f.kind not in ("nonfinite", "exploding_gradients") for f in findings(tmp_path / "run"))


@pytest.fixture(scope="module")
def searches(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict, dict]:
    """The same 12-trial search with and without pruning, in one SQLite storage."""
    root = tmp_path_factory.mktemp("optuna")
    storage = f"sqlite:///{root / 'study.db'}"
    search_digits("pruned", storage, root / "runs", trials=12, search=SEARCH)
    search_digits("unpruned", storage, root / "runs", trials=12,
                  search=DigitsSearch(**{**SEARCH.settings(), "prune": False}))
    return storage, root, study_report("pruned", storage), study_report("unpruned", storage)


def test_findings_prune_hopeless_trials_early(searches) -> None:
    _, _, pruned, unpruned = searches
    assert pruned["best_value"] >= 0.95
    cut = [t for t in pruned["trials"] if t["findings"]]
    assert cut and all(t["state"] == "pruned" and t["steps"] < SEARCH.steps for t in cut)
    assert all(t["params"]["lr"] > 0.03 for t in cut)                  # the absurd learning rates
    assert {f["kind"] for t in cut for f in t["findings"]} <= {"nonfinite", "exploding_gradients", "dead_units"}
    # the same trials (same seeded sampler) unpruned: each ran every step, and none did better
    assert unpruned["pruned"] == 0 and all(t["steps"] == SEARCH.steps for t in unpruned["trials"])
    by_number = {t["number"]: t for t in unpruned["trials"]}
    for t in cut:
        assert by_number[t["number"]]["params"] == t["params"]
        assert by_number[t["number"]]["value"] < pruned["best_value"]
    assert pruned["steps_saved"] == unpruned["steps_run"] - pruned["steps_run"] > 0
    assert set(pruned["importances"]) == {"lr", "layers"}


def test_cli_study_report_and_a_name_reused_with_other_settings(searches, tmp_path: Path) -> None:
    storage, _, pruned, _ = searches
    out = subprocess.run([NEURODBG, "runs", "study", "pruned", "--storage", storage, "--png", str(tmp_path / "s.png"),
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["best_value"] == pruned["best_value"] and (tmp_path / "s.png").stat().st_size > 1000
    with pytest.raises(RunError, match="other settings"):
        search_digits("pruned", storage, tmp_path, trials=1, search=DigitsSearch(steps=100))
    bad = subprocess.run([NEURODBG, "runs", "study", "nope", "--storage", storage], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [f"error: no study named 'nope' in {storage}"]


WORKER = """
import sys
from neurodbg.train.study import DigitsSearch, search_digits
search_digits(sys.argv[1], sys.argv[2], sys.argv[3], trials=int(sys.argv[4]),
              search=DigitsSearch(lr_low=1e-4, lr_high=1e-2, max_layers=3, steps=int(sys.argv[5])), heartbeat=1,
              grace=2)
print("done", flush=True)
"""


def _worker(name: str, storage: str, runs: Path, trials: int, steps: int = 100) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WORKER, name, storage, str(runs), str(trials), str(steps)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_two_workers_share_a_study_and_a_killed_search_resumes(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first, second = _worker("shared", storage, tmp_path, 6), _worker("shared", storage, tmp_path, 6)
    for worker in (first, second):
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    finished = [t for t in trials if t.state.is_finished()]
    assert 6 <= len(finished) <= 7                           # the second may finish one already under way
    runs = {Path(t.user_attrs["neurodbg_run"]).name for t in finished}
    assert len(runs) == len(finished)
    # a search killed in the middle of a trial, then run again: it ends with the trials asked for
    # longer trials, and one storage object polled (opening the storage anew each time is slow enough, on a
    # loaded machine, to miss every moment a trial runs)
    killed = _worker("resumed", storage, tmp_path, 4, steps=400)
    polled = optuna.storages.RDBStorage(storage)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        study = optuna.load_study(study_name="resumed", storage=polled) if _has(polled, "resumed") else None
        if study and sum(t.state.is_finished() for t in study.get_trials()) >= 1 and any(
                t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials()):
            break
        assert killed.poll() is None, "the search finished before it could be killed in the middle of a trial"
        time.sleep(0.05)
    polled.remove_session()
    polled.engine.dispose()                                  # no connection of ours stays open on the file
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    time.sleep(3)                                            # past the dead worker's heartbeat grace period
    again = _worker("resumed", storage, tmp_path, 4, steps=400)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    states = [t.state for t in optuna.load_study(study_name="resumed", storage=storage).get_trials()]
    assert sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states) == 4
    assert optuna.trial.TrialState.FAIL in states            # the trial the kill interrupted


def _has(storage: str | optuna.storages.BaseStorage, name: str) -> bool:
    return name in optuna.study.get_all_study_names(storage)
