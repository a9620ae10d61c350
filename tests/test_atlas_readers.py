"""One rule picks a neuron's description, and every reader follows it: the Monitor's
findings and steering previews, the neuron page, search, and the export show the
same text for a neuron, ties included. Layer filters in search take lists and
ranges."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurodbg.analyze.monitor import Monitor
from neurodbg.atlas import AtlasStore, descriptions
from neurodbg.atlas import export as export_lib
from neurodbg.atlas.export_json import write_json_lines
from neurodbg.cli.common import int_list
from neurodbg.describe.explanation import Explanation
from neurodbg.errors import NeurodbgError
from neurodbg.search.index import DescriptionIndex

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))


@pytest.fixture(scope="module")
def tied(described_atlas: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A copy of the described atlas with extra candidates that tie with, beat or lose to the
    statistical descriptions; returns the atlas and the text each neuron-polarity must show."""
    atlas = tmp_path_factory.mktemp("tied") / "atlas"
    shutil.copytree(described_atlas, atlas)
    store = AtlasStore.open(atlas)
    stat = {(e.layer, e.neuron, e.polarity): e for e in descriptions.best(store, layers=[1])}
    keys = sorted(k for k, e in stat.items() if e.score is not None)[:4]
    extra, expected = [], {}
    for key, (explainer, delta, wins) in zip(keys, [("aaa", 0.0, True), ("zzz", 0.0, False),
                                                    ("mmm", 0.05, True), ("bbb", None, False)], strict=True):
        base = stat[key]
        score = None if delta is None else (base.score or 0.0) + delta
        text = f"planted description by {explainer} for L{key[0]}/N{key[1]}{key[2]}"
        extra.append(Explanation(*key, explainer=explainer, candidate=0, text=text, score=score))
        expected[key] = text if wins else base.text
    descriptions.save(store, extra, [], "planted")
    store.close()
    return atlas, expected


def test_every_reader_shows_the_same_description(tied: tuple[Path, dict], default_model) -> None:
    atlas, expected = tied
    monitor = Monitor(default_model, atlas)
    view = monitor.view
    assert view is not None
    store = view.store
    by_rule = {(e.layer, e.neuron, e.polarity): e.text for e in descriptions.best(store)}
    assert {k: by_rule[k] for k in expected} == expected
    assert {k: d.text for k, d in view.descriptions().items()} == by_rule
    for (layer, neuron, polarity), text in expected.items():
        page = monitor.neuron(layer, neuron)
        assert page["descriptions"][polarity]["best"]["text"] == text
        assert descriptions.for_neuron(store, layer, neuron, polarity)[0].text == text
        preview = monitor.preview(monitor_spec(f"L{layer}/N{neuron}{polarity}"))
        assert preview[0]["description"] == text
    index = view.search().index
    indexed = {(int(a), int(b), "+" if p else "-"): t for a, b, p, t in
               zip(index.layers, index.neurons, index.positive, index.texts, strict=True)}
    assert indexed == by_rule
    out = io.StringIO()
    write_json_lines(store, out, export_lib.select(store, [1], ["descriptions"]))
    exported = {}
    for line in out.getvalue().splitlines():
        row = json.loads(line)
        for polarity, d in row["descriptions"].items():
            if d is not None:
                exported[(row["layer"], row["neuron"], polarity)] = d["text"]
    assert {k: exported[k] for k in expected} == expected
    # the clusters embed the same text: each planted neuron's embedding is its description's
    from neurodbg.search.atlas_search import searchable
    from neurodbg.search.embedder import embed

    keys = list(expected)
    got = view.embeddings(keys)
    want = embed([searchable(expected[k]) for k in keys])
    assert np.allclose(got, want, atol=1e-5)


def monitor_spec(neuron: str):
    from neurodbg.analyze.steering import parse_spec

    return parse_spec({"neurons": [neuron], "value": 0.0})


def test_layer_lists_and_ranges() -> None:
    assert int_list("1,5,9", "layers") == [1, 5, 9]
    assert int_list("0-3,7", "layers") == [0, 1, 2, 3, 7]
    assert int_list(" 4 ", "layers") == [4] and int_list(None, "layers") is None
    for bad in ("1-", "a", "5-2", "-1", "1,,2"):
        with pytest.raises(NeurodbgError, match="malformed layers"):
            int_list(bad, "layers")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    layers = np.repeat(np.arange(10), 4)
    index = DescriptionIndex(vectors, layers, np.tile(np.arange(4), 10), np.array(["+"] * 40),
                             np.full(40, np.nan), [str(i) for i in range(40)])
    hits = index.search(vectors[0], 40, layers=[1, 5, 9])
    assert {h.layer for h in hits} == {1, 5, 9} and len(hits) == 12
    assert {h.layer for h in index.search(vectors[0], 40, layers=range(2, 5))} == {2, 3, 4}


def test_cli_search_keeps_to_the_listed_layers(described_atlas: Path) -> None:
    out = subprocess.run([NEURODBG, "search", "punctuation", "--atlas", str(described_atlas), "--layers", "1",
                          "--k", "30", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert len(hits) == 30 and {h["layer"] for h in hits} == {1}
