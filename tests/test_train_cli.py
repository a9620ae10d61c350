"""`neurodbg runs` end to end on real digits runs: diagnose (the JSON the issue names),
list, show, plot, TensorBoard export, and bad input as one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neurodbg.train.digits import digits_data, mlp, train
from neurodbg.train.runs import findings

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))
PNG = b"\x89PNG\r\n\x1a\n"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NEURODBG, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-runs")
    data = digits_data()
    net = mlp([64, 128, 64, 10])
    train(net, torch.optim.Adam(net.parameters(), 1e-3), data, steps=300, run=root / "healthy")
    net = mlp([64] + [64] * 8 + [10], "sigmoid")
    train(net, torch.optim.SGD(net.parameters(), 0.1), data, steps=150, run=root / "sigmoid", every=2)
    return root


def test_diagnose_json(runs: Path) -> None:
    out = _cli("runs", "diagnose", str(runs / "sigmoid"), "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found == [f.to_dict() for f in findings(runs / "sigmoid")]
    assert {"kind", "where", "step", "evidence", "advice"} <= set(found[0])
    assert "vanishing_gradients" in {f["kind"] for f in found}
    healthy = _cli("runs", "diagnose", str(runs / "healthy"), "--json")
    assert healthy.returncode == 0 and json.loads(healthy.stdout) == []
    text = _cli("runs", "diagnose", str(runs / "sigmoid"))
    assert "[vanishing_gradients]" in text.stdout and "advice:" in text.stdout


def test_list_show_plot_and_tensorboard(runs: Path, tmp_path: Path) -> None:
    listing = json.loads(_cli("runs", "list", str(runs), "--json").stdout)
    assert {r["name"]: r["findings"] for r in listing}["healthy"] == 0
    shown = json.loads(_cli("runs", "show", str(runs / "healthy"), "--json").stdout)
    assert shown["status"] == "finished" and shown["steps"] == 300 and shown["findings"] == []
    assert shown["latest"]["val_acc"] >= 0.95
    png = tmp_path / "run.png"
    out = _cli("runs", "plot", str(runs / "sigmoid"), "--png", str(png))
    assert out.returncode == 0 and png.read_bytes()[:8] == PNG and png.stat().st_size > 20_000, out.stderr
    out = _cli("runs", "tensorboard", str(runs / "healthy"), "--out", str(tmp_path / "tb"), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["values"] > 300, out.stderr


def test_bad_input_is_one_line(runs: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 5000)
    cases = [
        (("runs", "diagnose", str(tmp_path / "missing")), "no run at"),
        (("runs", "show", str(tmp_path / "file")), "is a file"),
        (("runs", "diagnose", str(tmp_path / "broken")), "run database"),
        (("runs", "list", str(tmp_path / "missing")), "no runs at"),
        (("runs", "plot", str(runs / "healthy"), "--png", str(tmp_path / "no" / "dir" / "x.png")), "cannot write"),
        (("runs", "tensorboard", str(runs / "healthy"), "--out", str(tmp_path / "file")), "is a file"),
    ]
    for args, words in cases:
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], (args, result.stderr)


def test_build_kernels_reports_each_kernel() -> None:
    """`neurodbg build-kernels` (set-up runs it): every kernel ready, kept where later processes import
    them; a second call finds them built."""
    from neurodbg.cpp_kernel import kernels_dir

    out = _cli("build-kernels", "--json")
    assert out.returncode == 0, out.stderr
    assert [(r["kernel"], r["built"]) for r in json.loads(out.stdout)] == \
        [("the scan's C++ layer kernel", True), ("the image scan's C++ kernel", True),
         ("the training watcher's C++ kernel", True), ("activation maximisation's C++ kernel", True)]
    for stem in ("neurodbg_layer_stats", "neurodbg_image_site", "neurodbg_watch_stats", "neurodbg_small_ascent"):
        assert len(list(kernels_dir().glob(f"{stem}_*.so"))) >= 1
