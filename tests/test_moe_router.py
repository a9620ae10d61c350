"""Mixture-of-experts routers: canonical router sites on tiny random models of each family
(traced runs bit-identical to plain ones), router health equal to a manual recomputation
from the gate's own weights, the verdicts' thresholds, and `neurodbg moe report`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from test_moe_anatomy import tiny_moe

import neurodbg
from neurodbg.analyze.moe_report import moe_report
from neurodbg.analyze.router_health import RouterStats
from neurodbg.corpus import open_corpus
from neurodbg.errors import InterventionError, NeurodbgError


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"])
def test_router_sites_and_a_bit_identical_traced_run(name: str) -> None:
    module, experts, top_k = tiny_moe(name)
    model = neurodbg.Model(module, name=name)
    assert model.family == "moe"
    assert {"layers.1.router.logits", "layers.1.router.weights", "layers.1.router.experts", "layers.1.mlp.in",
            "layers.1.resid_out"} <= set(model.sites)
    assert ("layers.0.shared.act" in model.sites) == (name == "qwen2_moe")
    ids = torch.randint(0, 128, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = module(ids).logits
    tr = model.run(ids, capture=["layers.*.router.logits", "layers.1.router.experts", "layers.1.router.weights"])
    assert torch.equal(tr.logits, plain)
    assert tr["layers.0.router.logits"].shape == (3, 9, experts)              # per token, not flattened
    assert tr["layers.1.router.experts"].shape == tr["layers.1.router.weights"].shape == (3, 9, top_k)
    with pytest.raises(InterventionError, match="captured but not edited"):
        model.run(ids, interventions=[{"op": "ablate", "site": "layers.0.router.logits"}])


def test_router_health_equals_a_manual_recomputation_from_the_gate_weights() -> None:
    module, experts, top_k = tiny_moe("mixtral")
    model = neurodbg.Model(module, name="mixtral")
    batches = [torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(s)) for s in range(3)]
    stats = RouterStats(1, experts, top_k)
    inputs: list[torch.Tensor] = []
    gate = module.model.layers[1].mlp.gate
    hook = gate.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    try:
        for ids in batches:
            tr = model.run(ids, capture=["layers.1.router.logits", "layers.1.router.experts",
                                         "layers.1.router.weights"])
            stats.update(tr["layers.1.router.logits"], tr["layers.1.router.experts"],
                         tr["layers.1.router.weights"], capacity_factor=1.0)
    finally:
        hook.remove()
    health = stats.health()
    # by hand: logits from the gate's weight, softmax, top-k, loads per forward batch
    counts, probs_all, weight_sum, overflowing = torch.zeros(experts), [], torch.zeros(experts), 0.0
    for x in inputs:
        logits = x.reshape(-1, x.shape[-1]).double() @ gate.weight.detach().double().T
        probs = torch.softmax(logits, -1)
        top, chosen = probs.topk(top_k, -1)
        weights = top / top.sum(-1, keepdim=True)
        batch_counts = torch.bincount(chosen.flatten(), minlength=experts).double()
        counts += batch_counts
        probs_all.append(probs)
        weight_sum += torch.zeros(experts, dtype=torch.float64).index_add_(0, chosen.flatten(), weights.flatten())
        overflowing += float((batch_counts - math.ceil(chosen.numel() / experts)).clamp_min(0).sum())
    probs = torch.cat(probs_all)
    assert health.tokens == probs.shape[0] == 3 * 4 * 16
    assert health.shares == pytest.approx((counts / counts.sum()).tolist(), abs=1e-6)
    assert health.mean_prob == pytest.approx(probs.mean(0).tolist(), abs=1e-5)
    assert health.mean_weight == pytest.approx((weight_sum / counts).tolist(), abs=1e-5)
    entropy = float(-(probs * probs.log()).sum(-1).mean() / math.log(experts))
    assert health.entropy == pytest.approx(entropy, abs=1e-5)
    assert health.cv2 == pytest.approx(float(counts.var(unbiased=False) / counts.mean() ** 2), abs=1e-6)
    assert health.overflow == pytest.approx(overflowing / (counts.sum().item()), abs=1e-6)


def routed(shares: list[float], tokens: int = 10_000) -> RouterStats:
    """Stats of a top-1 router that sent `shares` of the tokens to each expert."""
    experts = len(shares)
    counts = [round(s * tokens) for s in shares]
    chosen = torch.cat([torch.full((c,), e) for e, c in enumerate(counts)]).view(-1, 1)
    logits = torch.nn.functional.one_hot(chosen[:, 0], experts).double() * 4.0
    stats = RouterStats(0, experts, 1)
    stats.update(logits, chosen, torch.ones_like(chosen, dtype=torch.float64), capacity_factor=1.25)
    return stats


def test_verdicts_follow_the_seeds_thresholds_for_any_number_of_experts() -> None:
    collapsed = routed([0.9, 0.1 - 0.0035, 0.0035] + [0.0] * 5).health()
    assert collapsed.verdicts == ["collapse", "idle"] and collapsed.dominant == 0
    assert collapsed.idle == [2, 3, 4, 5, 6, 7]                            # under 1 % of 8 experts' tokens
    assert routed([0.125] * 8).health().verdicts == ["healthy"]
    assert routed([0.05, 0.2, 0.15, 0.1, 0.1, 0.15, 0.15, 0.1]).health().verdicts == ["healthy"]   # the 5-20 % band
    assert routed([0.25, 0.15, 0.15, 0.1, 0.1, 0.1, 0.1, 0.05]).health().verdicts == ["imbalanced"]
    wide = routed([1 / 64] * 63 + [0.0]).health()                          # 64 experts: idle under 0.125 %
    assert wide.verdicts == ["idle"] and wide.idle == [63]
    even = routed([0.125] * 8).health()
    assert even.cv2 == pytest.approx(0.0) and even.overflow == 0.0
    assert collapsed.overflow == pytest.approx(0.9 - 1.25 / 8, abs=1e-3)  # beyond capacity 1.25 x 1/8


@pytest.fixture(scope="module")
def tiny_mixtral_dir(tmp_path_factory: pytest.TempPathFactory, default_model: neurodbg.Model) -> Path:
    """A random Mixtral with the default model's tokenizer, saved as a model directory."""
    tok = default_model.tokenizer
    config = transformers.MixtralConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                                        num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=128)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-mixtral")
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def test_moe_report_over_a_corpus_and_bad_input(tiny_mixtral_dir: Path, default_model: neurodbg.Model) -> None:
    model = neurodbg.load_model(str(tiny_mixtral_dir), progress=False)
    report = moe_report(model, open_corpus("default"), tokens=1024, progress=False)
    assert report.tokens == 1024 and [layer.layer for layer in report.layers] == [0, 1]
    # shares are rounded to 6 decimals, so 8 of them sum to 1 within 4e-6
    assert all(sum(layer.shares) == pytest.approx(1.0, abs=1e-5) and layer.verdicts for layer in report.layers)
    with pytest.raises(NeurodbgError, match="not a mixture of experts"):
        moe_report(default_model, open_corpus("default"), tokens=64, progress=False)
    with pytest.raises(NeurodbgError, match="capacity factor must be a positive number"):
        moe_report(model, open_corpus("default"), tokens=64, capacity_factor=0.0, progress=False)


def test_cli_moe_report(tiny_mixtral_dir: Path, tmp_path: Path) -> None:
    command = str(Path(sys.executable).with_name("neurodbg"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([command, "moe", "report", *args], capture_output=True, text=True, timeout=600,
                              check=False)

    done = run("--model", str(tiny_mixtral_dir), "--tokens", "512", "--zombies", "--json", "--png",
               str(tmp_path / "moe.png"))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [layer["layer"] for layer in out["layers"]] == [0, 1] and len(out["layers"][0]["shares"]) == 8
    assert set(out["layers"][0]["verdicts"]) <= {"collapse", "idle", "healthy", "imbalanced", "zombie"}
    assert len(out["layers"][1]["output_variance"]) == 8
    assert (tmp_path / "moe.png").read_bytes()[:4] == b"\x89PNG"
    for args, message in ((["--tokens", "64"], "not a mixture of experts"),
                          (["--model", str(tiny_mixtral_dir), "--capacity-factor", "-1"], "capacity factor")):
        done = run(*args)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
            (args, done.stderr)


def by_hand(block: torch.nn.Module, x: torch.Tensor, experts: list[int]) -> torch.Tensor:
    """A Mixtral block's output for one token [H] routed to `experts`, from its fused weights."""
    with torch.no_grad():
        probs = torch.softmax((x @ block.gate.weight.T).float(), -1)
        weights = probs[experts] / probs[experts].sum()
        out = torch.zeros_like(x)
        for w, e in zip(weights, experts, strict=True):
            gate, up = (x @ block.experts.gate_up_proj[e].T).chunk(2)
            out += w * ((torch.nn.functional.silu(gate) * up) @ block.experts.down_proj[e].T)
        return out


def test_forcing_and_banning_experts_equal_routing_by_hand() -> None:
    module, _, top_k = tiny_moe("mixtral")
    model = neurodbg.Model(module, name="mixtral")
    block = module.model.layers[0].mlp
    ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(3))
    sites = ["layers.0.mlp.in", "layers.0.mlp.out", "layers.0.router.experts"]
    base = model.run(ids, capture=sites)
    forced = model.run(ids, capture=sites, interventions=[
        {"op": "force_experts", "site": "layers.0.router.logits", "experts": [3, 1], "tokens": [2]}])
    assert forced["layers.0.router.experts"][:, 2].tolist() == [[3, 1], [3, 1]]
    for b in range(2):
        assert torch.allclose(forced["layers.0.mlp.out"][b, 2], by_hand(block, base["layers.0.mlp.in"][b, 2], [3, 1]),
                              atol=1e-5)
    # other tokens keep their routing exactly (their outputs only up to rounding: an expert's
    # matrix product over a different set of tokens rounds differently)
    untouched = [t for t in range(6) if t != 2]
    assert torch.equal(forced["layers.0.router.experts"][:, untouched], base["layers.0.router.experts"][:, untouched])
    assert torch.allclose(forced["layers.0.mlp.out"][:, untouched], base["layers.0.mlp.out"][:, untouched], atol=1e-6)
    # one forced expert: it takes the first slot, the router's best other choice the second
    one = model.run(ids, capture=sites, interventions=[
        {"op": "force_experts", "site": "layers.0.router.logits", "experts": [5], "tokens": "all"}])
    assert (one["layers.0.router.experts"][..., 0] == 5).all()
    top = int(base["layers.0.router.experts"][0, 0, 0])
    banned = model.run(ids, capture=sites, interventions=[
        {"op": "ban_experts", "site": "layers.*.router.logits", "experts": [top]}])
    assert not (banned["layers.0.router.experts"] == top).any()
    x = base["layers.0.mlp.in"][0, 0]
    with torch.no_grad():
        probs = torch.softmax((x @ block.gate.weight.T).float(), -1)
    probs[top] = -1
    assert torch.allclose(banned["layers.0.mlp.out"][0, 0], by_hand(block, x, probs.topk(top_k).indices.tolist()),
                          atol=1e-5)


@pytest.mark.parametrize(("iv", "message"), [
    ({"op": "ban_experts", "site": "layers.0.router.logits", "experts": [6]}, "expert 6 out of range"),
    ({"op": "force_experts", "site": "layers.0.router.logits", "experts": [1, 2, 3]}, "each token goes to 2"),
    ({"op": "ban_experts", "site": "layers.0.router.logits", "experts": [0, 1, 2, 3, 4]}, "leaves fewer than"),
    ({"op": "force_experts", "site": "layers.0.mlp.in", "experts": [1]}, "its site is a router site"),
    ({"op": "force_experts", "site": "layers.0.router.logits", "experts": [1], "tokens": [9]}, "out of range"),
    ({"op": "force_experts", "site": "layers.0.router.logits", "experts": []}, "at least 1"),
    ({"op": "ban_experts", "site": "layers.0.router.logits", "experts": [1], "neurons": [2]}, "neurons"),
])
def test_bad_router_edits(iv: dict, message: str) -> None:
    module, _, _ = tiny_moe("mixtral")
    with pytest.raises(NeurodbgError, match=message):
        neurodbg.Model(module, name="mixtral").run(torch.randint(0, 128, (1, 6)), interventions=[iv])


def test_expert_output_variance_by_hand_and_a_zombie_expert(default_model: neurodbg.Model) -> None:
    from neurodbg.analyze.expert_outputs import watch_expert_outputs

    tok = default_model.tokenizer
    config = transformers.MixtralConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                                        num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=128)
    torch.manual_seed(0)
    module = transformers.AutoModelForCausalLM.from_config(config).eval()
    model = neurodbg.Model(module, tokenizer=tok, name="tiny-mixtral")
    ids = torch.randint(0, len(tok), (2, 24), generator=torch.Generator().manual_seed(0))
    plain = model.run(ids, capture=["layers.1.mlp.in", "layers.1.router.experts"])
    with watch_expert_outputs(model, [0, 1]) as outputs:
        watched = model.run(ids)
    assert torch.equal(watched.logits, plain.logits)                      # the model's own computation untouched
    assert not module.model.layers[1].mlp.experts._forward_hooks              # and the hooks gone
    block = module.model.layers[1].mlp
    x = plain["layers.1.mlp.in"].reshape(-1, 64)
    chosen = plain["layers.1.router.experts"].reshape(-1, 2)
    for e, variance in enumerate(outputs[1].variance()):
        rows = (chosen == e).any(-1)
        if not rows.any():
            assert variance is None
            continue
        with torch.no_grad():
            gate, up = (x[rows] @ block.experts.gate_up_proj[e].T).chunk(2, -1)
            y = ((torch.nn.functional.silu(gate) * up) @ block.experts.down_proj[e].T).double()
        assert variance == pytest.approx(float(y.var(0, unbiased=False).mean()), rel=1e-6)
    with torch.no_grad():
        module.model.layers[0].mlp.experts.down_proj[3] *= 1e-3          # expert 3 of layer 0 answers ~nothing
    report = moe_report(model, open_corpus("default"), tokens=1024, zombies=True, progress=False)
    first = report.layers[0]
    assert "zombie" in first.verdicts and first.zombies == [3] and first.shares[3] > 0
    assert report.layers[1].zombies == [] and report.layers[1].output_variance is not None
    plain_report = moe_report(model, open_corpus("default"), tokens=1024, progress=False)
    assert plain_report.layers[0].output_variance is None and "zombie" not in plain_report.layers[0].verdicts
    assert plain_report.layers[0].shares == first.shares


def test_an_expert_atlas_from_the_router_logits(tiny_mixtral_dir: Path, tmp_path: Path) -> None:
    """Scanning `layers.*.router.logits` makes each expert a neuron of the atlas: the tokens
    routed to it most strongly, described and searchable like neurons."""
    from neurodbg.atlas import records
    from neurodbg.atlas.store import AtlasStore
    from neurodbg.describe.runner import describe_atlas
    from neurodbg.scan import ScanSettings, scan
    from neurodbg.scan.runner import sequence_stream
    from neurodbg.search.atlas_search import AtlasSearch

    model = neurodbg.load_model(str(tiny_mixtral_dir), progress=False)
    settings = ScanSettings(sites=("layers.*.router.logits",), max_tokens=4096)
    summary = scan(model, open_corpus("default"), tmp_path / "atlas", settings, progress=False)
    assert summary.neurons == 2 * 8
    # brute force: the gate's own weight over the same sequences (position 0 left out, as in every scan)
    gate = model.module.model.layers[1].mlp.gate
    inputs: list[torch.Tensor] = []
    hook = gate.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    seqs = list(sequence_stream(open_corpus("default"), model, settings))
    try:
        with torch.no_grad():
            for start in range(0, len(seqs), 8):
                model.module(torch.tensor([s.ids for s in seqs[start:start + 8]]), use_cache=False)
    finally:
        hook.remove()
    logits = torch.cat([x.reshape(-1, 64, 64) for x in inputs]) @ gate.weight.detach().T    # [sequences, 64, 8]
    per_sequence = logits[:, 1:].amax(1)
    with AtlasStore.open(tmp_path / "atlas") as store:
        for expert in range(8):
            rec = records.neuron(store, 1, expert)
            assert rec.site == "layers.1.router.logits"
            assert rec.max_value == pytest.approx(float(per_sequence[:, expert].max()), rel=1e-5)
            assert rec.exemplars["+"][0].seq_index == seqs[int(per_sequence[:, expert].argmax())].index
        describe_atlas(store, progress=False)
        assert records.neuron_count(store) == 16
        hits = AtlasSearch(store).search("punctuation", k=5)
        assert hits and all(h.layer in (0, 1) and 0 <= h.neuron < 8 for h in hits)
    with pytest.raises(NeurodbgError, match="cannot be scanned"):
        scan(model, open_corpus("default"), tmp_path / "other", ScanSettings(sites=("layers.*.router.experts",),
                                                                             max_tokens=512), progress=False)


def test_which_experts_handled_each_token(tiny_mixtral_dir: Path, default_model: neurodbg.Model) -> None:
    from neurodbg.analyze.moe_report import token_routes

    model = neurodbg.load_model(str(tiny_mixtral_dir), progress=False)
    out = token_routes(model, "The cat sat on the mat")
    ids = model.encode("The cat sat on the mat")
    direct = model.run(ids, capture=["layers.0.router.experts", "layers.1.router.weights"])
    assert [t["token"] for t in out["tokens"]] == [model.tokenizer.decode([int(i)]) for i in ids[0]]
    for t in out["tokens"]:
        assert [layer["layer"] for layer in t["layers"]] == [0, 1]
        assert t["layers"][0]["experts"] == direct["layers.0.router.experts"][0, t["position"]].tolist()
        assert t["layers"][1]["weights"] == pytest.approx(direct["layers.1.router.weights"][0, t["position"]].tolist())
        assert sum(t["layers"][1]["weights"]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(NeurodbgError, match="not a mixture of experts"):
        token_routes(default_model, "hello")
    command = str(Path(sys.executable).with_name("neurodbg"))
    done = subprocess.run([command, "moe", "route", "The cat sat", "--model", str(tiny_mixtral_dir), "--json"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tokens"][0]["layers"][0]["experts"] == out["tokens"][0]["layers"][0]["experts"]


def test_routes_over_http(tiny_mixtral_dir: Path, served: str) -> None:
    import httpx
    from serving import running

    from neurodbg.analyze.moe_report import token_routes
    from neurodbg.analyze.monitor import Monitor
    from neurodbg.serve import create_app

    model = neurodbg.load_model(str(tiny_mixtral_dir), progress=False)
    with running(create_app(Monitor(model))) as url:
        r = httpx.post(f"{url}/api/moe/route", json={"input": {"text": "The cat sat"}}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json() == json.loads(json.dumps(token_routes(model, "The cat sat")))
        bad = httpx.post(f"{url}/api/moe/route", json={"input": {"text": "x"}, "path": "/etc"}, timeout=60)
        assert bad.status_code == 422
    dense = httpx.post(f"{served}/api/moe/route", json={"input": {"text": "The cat sat"}}, timeout=60)
    assert dense.status_code == 400 and "not a mixture of experts" in dense.json()["detail"]


def test_the_experts_view_in_a_browser(tiny_mixtral_dir: Path) -> None:
    """The Experts tab (shown for MoE models only): the routes of the conversation's tokens as the API
    gives them, and a ban regenerates with the before/after comparison."""
    from serving import running
    from test_serve_browser import CHROMIUM_ARGS, assert_translated, chromium_path, new_page, send

    from neurodbg.analyze.moe_report import token_routes
    from neurodbg.analyze.monitor import Monitor
    from neurodbg.serve import create_app

    model = neurodbg.load_model(str(tiny_mixtral_dir), progress=False)
    from playwright.sync_api import sync_playwright

    with running(create_app(Monitor(model))) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page, errors = new_page(browser, url)
            assert page.locator("#experts-tab").is_visible()
            send(page, "The cat sat", chat=False, max_new=2)
            page.click('.tabs button[data-tab="experts"]')
            page.wait_for_selector("#experts table.routes")
            ids = page.evaluate("state.ids")
            routes = token_routes(model, torch.tensor([ids]))["tokens"]
            cells = page.locator("#experts table.routes tr").nth(1).locator("td").all_inner_texts()
            assert cells == [" ".join(map(str, t["layers"][0]["experts"])) for t in routes[-40:]]
            page.fill("#route-experts", str(routes[-1]["layers"][0]["experts"][0]))
            page.click("#route-form button[type=submit]")
            page.wait_for_selector("#route-result .compare")
            assert "banning experts" in page.locator("#route-result").inner_text()
            assert_translated(page)
            assert errors == []
        finally:
            browser.close()
