"""`diff A B`: the neurons that respond most differently to two images or two prompts,
checked against summaries computed from plain forward hooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import neurodbg
from neurodbg.analyze.input_diff import diff_inputs
from neurodbg.errors import ImageError, NeurodbgError
from neurodbg.vision.images import batch_of

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))


@pytest.fixture(scope="module")
def red_and_blue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("colours")
    red, blue = folder / "red.png", folder / "blue.png"
    Image.new("RGB", (48, 48), (220, 30, 30)).save(red)
    Image.new("RGB", (48, 48), (30, 30, 220)).save(blue)
    return red, blue


def hooked(module: torch.nn.Module, path: str, x: object) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    handle = dict(module.named_modules())[path].register_forward_hook(lambda m, a, o: seen.append(o.detach()))
    try:
        with torch.no_grad():
            module(x) if isinstance(x, torch.Tensor) else module(**x)  # type: ignore[arg-type]
    finally:
        handle.remove()
    return seen[0][0]


def test_red_and_blue_channels_equal_manual_hooks(red_and_blue) -> None:
    model = neurodbg.load_model("resnet18", progress=False)
    red, blue = red_and_blue
    result = diff_inputs(model, red, blue, ["stages.3.blocks.1.out", "pool"], top=5, reduce="mean")
    a = hooked(model.module, "layer4.1", batch_of(model, [red])).flatten(1).mean(1)
    b = hooked(model.module, "layer4.1", batch_of(model, [blue])).flatten(1).mean(1)
    want = sorted(range(512), key=lambda i: (-abs(float(b[i] - a[i])), i))[:5]
    rows = result.top["stages.3.blocks.1.out"]
    assert [r.neuron for r in rows] == want
    assert all(r.a == float(a[r.neuron]) and r.b == float(b[r.neuron]) for r in rows)
    assert result.to_dict()["sites"]["pool"]["neurons"] == 512


def test_two_prompts_equal_manual_hooks(default_model) -> None:
    a_text, b_text = "The cat sat on the mat", "The dog sat on the mat"
    result = diff_inputs(default_model, a_text, b_text, ["layers.5.mlp.act"], top=4)
    path = "model.layers.5.mlp.down_proj"
    seen: list[torch.Tensor] = []
    handle = dict(default_model.module.named_modules())[path].register_forward_pre_hook(
        lambda m, args: seen.append(args[0].detach()[0]))
    try:
        with torch.no_grad():
            for text in (a_text, b_text):
                default_model.module(input_ids=default_model.encode(text))
    finally:
        handle.remove()
    a, b = (s[1:].amax(0) for s in seen)                    # position 0 left out
    want = sorted(range(a.numel()), key=lambda i: (-abs(float(b[i] - a[i])), i))[:4]
    assert [r.neuron for r in result.top["layers.5.mlp.act"]] == want


def test_diff_bad_input(default_model, red_and_blue) -> None:
    with pytest.raises(NeurodbgError, match="unknown reduce"):
        diff_inputs(default_model, "a b", "c d", reduce="median")  # type: ignore[arg-type]
    with pytest.raises(NeurodbgError, match="compare two prompts"):
        diff_inputs(default_model, "a b", 3)
    digits = neurodbg.load_model("digits", progress=False)
    with pytest.raises(ImageError, match="no such image file"):
        diff_inputs(digits, red_and_blue[0], "/nonexistent.png")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([NEURODBG, *args], capture_output=True, text=True, env=env, timeout=300, check=False)


def test_cli_diff_images_and_bad_input(red_and_blue, tmp_path: Path) -> None:
    red, blue = red_and_blue
    r = cli("diff", str(red), str(blue), "--top", "3", "--json", "--png", str(tmp_path / "d.png"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "digits" and out["kind"] == "images" and len(out["sites"]) == 4
    assert all(len(s["top"]) == 3 for s in out["sites"].values())
    assert Image.open(out["png"]).format == "PNG"
    for args, message in ((["diff", str(red), "/nonexistent.png"], "no such image file"),
                          (["diff", str(red), str(blue), "--reduce", "median"], "unknown reduce"),
                          (["diff", str(red), str(blue), "--site", "nowhere"], "unknown site")):
        r = cli(*args)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
