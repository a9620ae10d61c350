"""Embedding maps on the real default model: token vectors are the embedding matrix's rows,
contextual vectors are Hugging Face's own hidden states at the word's tokens, neighbours are
a brute-force cosine search, the layout is scikit-learn's PCA of those vectors; t-SNE and UMAP
are seeded; bad items are one clear error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

import neurodbg
from neurodbg.analyze.embedding_map import embedding_map
from neurodbg.errors import NeurodbgError, PromptError

WORDS = ["doctor", "Doctor", "医生", "cat", "Cat", "Chat"]
BANKS = ["bank@I sat on the river bank and watched the water", "bank@Fish swam near the muddy bank of the stream",
         "bank@She deposited the money at the bank", "bank@The bank raised its interest rates"]
COMMAND = str(Path(sys.executable).with_name("neurodbg"))


def test_token_map_equals_the_embedding_matrix_and_a_brute_force_search(default_model: neurodbg.Model) -> None:
    result = embedding_map(default_model, WORDS, neighbours=5)
    tok = default_model.tokenizer
    table = default_model.module.model.embed_tokens.weight.detach().double()
    expected = np.stack([table[tok.encode(w, add_special_tokens=False)].mean(0).numpy() for w in WORDS])
    np.testing.assert_array_equal(result.vectors, expected)
    assert result.items[2].tokens == [tok.decode([i]) for i in tok.encode("医生", add_special_tokens=False)]
    pca = PCA(n_components=2, random_state=0).fit(expected)
    np.testing.assert_allclose(result.points, pca.transform(expected), atol=1e-9)
    assert result.explained == pytest.approx(list(pca.explained_variance_ratio_))
    unit = torch.nn.functional.normalize(table, dim=1)
    for word, vec, near in zip(WORDS, expected, result.neighbours, strict=True):
        sims = unit @ (torch.from_numpy(vec) / np.linalg.norm(vec))
        sims[tok.encode(word, add_special_tokens=False)] = -2
        best = sims.topk(5).indices.tolist()
        assert [n["id"] for n in near] == best, word
        assert [n["cosine"] for n in near] == pytest.approx(sims[best].tolist(), abs=1e-6)
    # the seeds' examples: Doctor's nearest tokens are doctor's spellings; Cat sits next to cat
    assert {"doctor", " doctor"} & {n["token"] for n in result.neighbours[1][:3]}
    assert result.similarity[3, 4] == pytest.approx(float(np.dot(expected[3], expected[4]) /
                                                          np.linalg.norm(expected[3]) / np.linalg.norm(expected[4])))


def test_contextual_map_equals_hugging_faces_hidden_states(default_model: neurodbg.Model) -> None:
    result = embedding_map(default_model, BANKS, kind="contextual", layer=12, neighbours=3)
    tok = default_model.tokenizer
    for item, vec in zip(result.items, result.vectors, strict=True):
        ids = tok(item.context)["input_ids"]
        where = [i for i, t in enumerate(ids) if tok.decode([t]) == " bank"]
        with torch.no_grad():
            hidden = default_model.module(torch.tensor([ids]), output_hidden_states=True).hidden_states[13]
        np.testing.assert_allclose(vec, hidden[0, where[-1:]].double().mean(0).numpy(), rtol=1e-6, atol=1e-6)
        assert item.tokens == [" bank"]
    # the river banks are each other's nearest, and so are the money banks
    labels = [[n["label"] for n in near] for near in result.neighbours]
    assert labels[0][0] == BANKS[1] and labels[1][0] == BANKS[0]
    assert labels[2][0] == BANKS[3] and labels[3][0] == BANKS[2]
    assert result.notes == []
    alone = embedding_map(default_model, ["river", "money"], kind="contextual")
    assert alone.layer == default_model.n_layers // 2 and "first position" in alone.notes[0]


def test_tsne_and_umap_are_seeded(default_model: neurodbg.Model, tmp_path: Path) -> None:
    words = [*WORDS, "dog", "nurse"]
    for method in ("tsne", "umap"):
        a = embedding_map(default_model, words, method=method, seed=3)
        b = embedding_map(default_model, words, method=method, seed=3)
        assert a.points.shape == (8, 2) and np.array_equal(a.points, b.points), method
        assert a.figure(tmp_path / f"{method}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_items_are_refused(default_model: neurodbg.Model) -> None:
    with pytest.raises(PromptError, match="does not occur in its sentence"):
        embedding_map(default_model, ["bank@The river flows", "cat"], kind="contextual")
    with pytest.raises(NeurodbgError, match="2 to 200 items"):
        embedding_map(default_model, ["cat"])
    with pytest.raises(NeurodbgError, match="unknown map method"):
        embedding_map(default_model, ["cat", "dog"], method="mds")        # type: ignore[arg-type]
    with pytest.raises(NeurodbgError, match="layer 99"):
        embedding_map(default_model, ["cat", "dog"], kind="contextual", layer=99)


def test_cli_embeddings(tmp_path: Path) -> None:
    png = tmp_path / "map.png"
    done = subprocess.run([COMMAND, "embeddings", *WORDS, "--png", str(png), "--json"], capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [i["label"] for i in out["items"]] == WORDS and out["png"] == str(png) and png.stat().st_size > 10_000
    assert len(out["similarity"]) == 6 and len(out["explained_variance"]) == 2
    bad = subprocess.run([COMMAND, "embeddings", "bank@The river flows", "cat", "--kind", "contextual"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "does not occur" in bad.stderr
