"""Linear probes on the real default model: per-layer accuracies equal a direct scikit-learn
fit on features captured independently (Hugging Face's own hidden states), separation and
the exported direction equal their definitions computed by hand, and bad prompt sets are
one clear error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import neurodbg
from neurodbg.analyze.probe_data import ProbeData, load_probe_data
from neurodbg.analyze.probes import probe
from neurodbg.errors import ProbeDataError
from neurodbg.trace.interventions import parse_interventions

MATH = ["What is 12 plus 7?", "Compute 345 times 678.", "Solve for x: 2x + 3 = 11.", "What is the square root of 81?",
        "Divide 144 by 12.", "Is 17 a prime number?", "What is 9.11 minus 9.9?", "Integrate x squared from 0 to 1."]
CHAT = ["How was your weekend?", "Tell me about your favourite film.", "I love walking by the sea.",
        "What should I cook tonight?", "My cat sleeps all day.", "Let's meet for coffee tomorrow.",
        "The garden looks lovely in spring.", "Have you read any good books lately?"]


@pytest.fixture(scope="module")
def labelled() -> ProbeData:
    return ProbeData("math-vs-chat", MATH + CHAT, ["math"] * 8 + ["chat"] * 8)


@pytest.fixture(scope="module")
def report(default_model: neurodbg.Model, labelled: ProbeData):
    return probe(default_model, labelled, folds=4, classifier="logistic", progress=False)


def test_probe_accuracies_equal_a_direct_fit_on_hidden_states(default_model: neurodbg.Model, labelled: ProbeData,
                                                              report) -> None:
    layers = default_model.n_layers
    assert [p.layer for p in report.layers] == list(range(layers))
    rows = []
    with torch.no_grad():
        for text in labelled.texts:
            out = default_model.module(default_model.encode(text), output_hidden_states=True)
            rows.append(torch.stack([h[0, -1] for h in out.hidden_states[1:]]).float().numpy())
    features = np.stack(rows)                      # [prompts, layers, width]; the last one is after the final norm
    y = np.asarray(labelled.labels)
    for p in report.layers[:-1]:
        x = features[:, p.layer]
        direct = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), x, y,
                                 cv=StratifiedKFold(4, shuffle=True, random_state=0))
        assert p.accuracy == pytest.approx(float(direct.mean()), abs=1e-6), p.site
        means = [x[y == c].mean(0) for c in ("chat", "math")]
        spread = np.sqrt(np.mean([np.square(x[y == c] - m).sum(1).mean() for c, m in zip(("chat", "math"), means,
                                                                                          strict=True)]))
        assert p.separation == pytest.approx(float(np.linalg.norm(means[0] - means[1]) / spread), rel=1e-4)
    assert report.best.accuracy == max(p.accuracy for p in report.layers)
    assert report.chance == 0.5 and report.classes == ["chat", "math"]
    # the default classifier, ridge, equals RidgeClassifier fitted directly on the same features
    ridge = probe(default_model, labelled, folds=4, effect_prompts=0, progress=False)
    for p in ridge.layers[:-1]:
        direct = cross_val_score(make_pipeline(StandardScaler(), RidgeClassifier()), features[:, p.layer], y,
                                 cv=StratifiedKFold(4, shuffle=True, random_state=0))
        assert p.accuracy == pytest.approx(float(direct.mean()), abs=1e-6), p.site


def test_the_direction_is_the_mean_difference_and_moves_the_last_probe(default_model: neurodbg.Model,
                                                                      labelled: ProbeData, report) -> None:
    captured = []
    for text in labelled.texts:
        tr = default_model.run(text, capture=report.best.site, reduce="last")
        captured.append(tr[report.best.site].reshape(-1).float().numpy())
    x, y = np.stack(captured), np.asarray(labelled.labels)
    assert np.allclose(report.direction, x[y == "math"].mean(0) - x[y == "chat"].mean(0), atol=1e-5)
    saved = parse_interventions(json.loads(report.direction_json()))
    assert saved[0].op == "add_vector" and saved[0].site == report.best.site
    effect = report.effect
    assert effect.positive == "math" and effect.prompts == 8
    assert effect.mean_probability_after > effect.mean_probability_before
    assert report.to_dict()["layers"][0].keys() >= {"layer", "accuracy"}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "content", "message"), [
    ("one.csv", "text,label\na,x\nb,x\n", "one class"),
    ("extra.csv", "text,label\na,x,zzz\nb,y\n", "more fields than the header"),
    ("cols.csv", "prompt,label\na,x\n", "needs the columns text and label"),
    ("bad.jsonl", '{"text": "a", "label": "x"}\n{not json\n', "line 2: not JSON"),
    ("nolabel.jsonl", '{"text": "a"}\n', "no label"),
    ("single.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c", "label": "y"}\n',
     "class 'x' has one prompt"),
    ("data.txt", "a\n", ".csv or .jsonl"),
])
def test_bad_prompt_sets(tmp_path: Path, name: str, content: str, message: str) -> None:
    with pytest.raises(ProbeDataError, match=message):
        load_probe_data(write(tmp_path / name, content))


def test_missing_files_examples_and_classes(tmp_path: Path, default_model: neurodbg.Model,
                                           labelled: ProbeData) -> None:
    with pytest.raises(ProbeDataError, match="no labelled prompt set"):
        load_probe_data(tmp_path / "nope.csv")
    with pytest.raises(ProbeDataError, match="no example set 'nope'"):
        load_probe_data("example:nope")
    with pytest.raises(ProbeDataError, match="no class 'law'"):
        probe(default_model, labelled, positive="law", progress=False)
    data = load_probe_data("example:sources", per_class=3)
    assert data.counts() == dict.fromkeys(sorted(["kjv-bible", "python-docstrings", "python-reference",
                                                  "state-of-the-union", "moby-dick", "conversations", "arithmetic",
                                                  "calendar"]), 3)


def test_cli_probe(tmp_path: Path) -> None:
    command = str(Path(sys.executable).with_name("neurodbg"))
    rows = [{"text": t, "label": "math" if t in MATH else "chat"} for t in MATH[:4] + CHAT[:4]]
    data = write(tmp_path / "set.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run([command, "probe", "--data", str(data), "--site", "layers.*.resid_out", "--folds", "2",
                           "--json", "--png", str(tmp_path / "probe.png"), "--save-direction",
                           str(tmp_path / "dir.json")], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["layers"]) == 30 and all(0 <= layer["accuracy"] <= 1 for layer in out["layers"])
    assert out["best_layer"] in range(30) and (tmp_path / "probe.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "dir.json").read_text())["interventions"][0]["op"] == "add_vector"
    bad = subprocess.run([command, "probe", "--data", str(write(tmp_path / "b.csv", "text,label\na,x\n"))],
                         capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2 and "one class" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
