"""Site names, patterns and resolution."""

from __future__ import annotations

import pytest
from families import tiny_model

import neurodbg
from neurodbg.sites.patterns import matches


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("layers.*.mlp.act", "layers.12.mlp.act", True),
    ("layers.*.mlp.act", "layers.12.mlp.out", False),
    ("layers.3-7.resid_out", "layers.5.resid_out", True),
    ("layers.3-7.resid_out", "layers.8.resid_out", False),
    ("layers.3-7.resid_out", "layers.3.resid_out", True),
    ("layers.1,4.mlp.*", "layers.4.mlp.in", True),
    ("layers.1,4.mlp.*", "layers.2.mlp.in", False),
    ("layers.**", "layers.2.attn.pattern", True),
    ("embed", "embed", True),
])
def test_pattern_matching(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


@pytest.fixture(scope="module")
def llama() -> neurodbg.Model:
    return neurodbg.wrap(tiny_model("llama"))


def test_canonical_sites_in_model_order(llama: neurodbg.Model) -> None:
    sites = llama.sites
    assert sites[0] == "embed" and sites[-2:] == ["final_norm", "logits"]
    assert sites[1:8] == [f"layers.0.{k}" for k in ("resid_in", "attn.out", "attn.pattern", "mlp.in", "mlp.act",
                                                    "mlp.out", "resid_out")]
    act = llama.resolve("layers.1.mlp.act")[0]
    assert (act.module_path, act.port) == ("model.layers.1.mlp.down_proj", "input")


def test_patterns_select_many(llama: neurodbg.Model) -> None:
    assert [s.name for s in llama.resolve("layers.*.mlp.act")] == [f"layers.{i}.mlp.act" for i in range(3)]
    assert [s.name for s in llama.resolve("layers.1-2.resid_out")] == ["layers.1.resid_out", "layers.2.resid_out"]
    # several specs, duplicates once
    assert len(llama.resolve(["layers.0.mlp.act", "layers.*.mlp.act"])) == 3


def test_raw_paths_work_on_known_families(llama: neurodbg.Model) -> None:
    site = llama.resolve("model.layers.0.self_attn:output[1]")[0]
    assert (site.module_path, site.port, site.index) == ("model.layers.0.self_attn", "output", 1)
    assert len(llama.resolve("model.layers.*.mlp.down_proj:input")) == 3


@pytest.mark.parametrize("bad", ["layers.9.mlp.act", "layers.0.mlp.neurons", "nonsense", "layers.7-9.mlp.act", ""])
def test_unknown_sites(llama: neurodbg.Model, bad: str) -> None:
    with pytest.raises(neurodbg.UnknownSiteError):
        llama.resolve(bad)


def test_unknown_site_message_is_helpful(llama: neurodbg.Model) -> None:
    with pytest.raises(neurodbg.UnknownSiteError, match=r"layers 0-2 with sites .*mlp\.act"):
        llama.resolve("layers.9.mlp.act")
