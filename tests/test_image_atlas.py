"""Image atlases: scikit-learn's digits scanned through the digits CNN into the same atlas
a text scan makes, checked against a brute-force pass with the model's own forward hooks;
receptive-field crops checked by perturbing pixels; descriptions, search, the neuron page
and the CLI; resume; folders of images; bad input."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from digit_pictures import first_held_out, save_digit

import neurodbg
from neurodbg.atlas import records
from neurodbg.atlas.binding import model_for_atlas
from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import AtlasError, AtlasMismatchError, ImageError, NeurodbgError
from neurodbg.vision.image_atlas import image_neuron_page
from neurodbg.vision.image_corpus import open_image_corpus
from neurodbg.vision.image_scan import image_settings, scan_images

LOGITS = 6            # the digits CNN's atlas layers: stem 0, four blocks 1-4, pool 5, logits 6
BLOCK = 2             # stages.0.blocks.1.out: 8x8 positions, a 7x7 receptive field


@pytest.fixture(scope="module")
def digits() -> neurodbg.Model:
    return neurodbg.load_model("digits", progress=False)


@pytest.fixture(scope="module")
def store(digits_atlas: Path):
    with AtlasStore.open(digits_atlas) as opened:
        yield opened


@pytest.fixture(scope="module")
def brute_force(digits: neurodbg.Model) -> dict[str, torch.Tensor]:
    """Every digit's outputs at three sites, read with plain forward hooks (not the tracer), as
    [images, positions, channels]."""
    corpus = open_image_corpus("digits")
    paths = {"stem": "stem", "stages.0.blocks.1.out": "stages.0.blocks.1", "logits": "logits"}
    modules = dict(digits.module.named_modules())
    found: dict[str, list[torch.Tensor]] = {name: [] for name in paths}
    hooks = [modules[path].register_forward_hook(
        lambda _m, _i, out, name=name: found[name].append(out.detach().clone())) for name, path in paths.items()]
    try:
        with torch.no_grad():
            for start in range(0, len(corpus), 64):
                pixels = torch.stack([digits.preprocess(corpus.image(i))
                                      for i in range(start, min(len(corpus), start + 64))])
                digits.module(pixels)
    finally:
        for hook in hooks:
            hook.remove()
    out = {}
    for name, parts in found.items():
        value = torch.cat(parts)
        out[name] = value.flatten(2).transpose(1, 2) if value.dim() == 4 else value.unsqueeze(1)
    return out


def test_top_images_of_each_class_logit_are_that_digit(store: AtlasStore) -> None:
    labels = {i: row.label for i, row in records.images(store).items()}
    for digit in range(10):
        top = records.neuron(store, LOGITS, digit).exemplars["+"]
        assert len(top) == 20
        share = np.mean([labels[e.seq_index] == digit for e in top])
        assert share >= 0.9, (digit, share)


@pytest.mark.parametrize(("layer", "site"), [(0, "stem"), (BLOCK, "stages.0.blocks.1.out"), (LOGITS, "logits")])
def test_atlas_statistics_equal_a_brute_force_pass(store: AtlasStore, brute_force: dict[str, torch.Tensor],
                                                   layer: int, site: str) -> None:
    acts = brute_force[site]                                       # [1797, positions, channels]
    flat = acts.reshape(-1, acts.shape[-1]).double()
    per_image_max = acts.amax(dim=1)                               # [1797, channels]
    for channel in range(0, acts.shape[-1], 3):
        rec = records.neuron(store, layer, channel)
        assert rec.site == site and rec.n_tokens == flat.shape[0]
        assert rec.max_value == pytest.approx(float(flat[:, channel].max()), rel=1e-6)
        assert rec.min_value == pytest.approx(float(flat[:, channel].min()), rel=1e-6)
        assert rec.mean == pytest.approx(float(flat[:, channel].mean()), rel=1e-6, abs=1e-9)
        assert rec.frac_active == pytest.approx(float((flat[:, channel] > 0).double().mean()), abs=1e-12)
        # the top 20 images by their peak, ties by index: the order of the atlas's exemplars
        values = per_image_max[:, channel].tolist()
        ranked = sorted(range(len(values)), key=lambda i: (-values[i], i))[:20]
        assert [e.seq_index for e in rec.exemplars["+"]] == ranked
        best = rec.exemplars["+"][0]                               # its per-position activations, fp16
        assert np.allclose(best.acts, acts[best.seq_index, :, channel].half().float().numpy())


def test_receptive_field_crop_holds_all_the_peak_sees(store: AtlasStore, digits: neurodbg.Model) -> None:
    """Pixels outside a peak's box cannot change the activation there; those inside do."""
    corpus = open_image_corpus("digits")
    page = image_neuron_page(store, BLOCK, 5, exemplars=3)
    assert page["grid"] == {"rows": 8, "cols": 8, "skip": 0, "height": 8, "width": 8}
    module = dict(digits.module.named_modules())["stages.0.blocks.1"]
    for entry in page["exemplars"]["+"]:
        row, col = entry["peak"]["row"], entry["peak"]["col"]
        top, left, bottom, right = entry["field"]
        assert (top, left, bottom, right) == (max(0, row - 3), max(0, col - 3), min(7, row + 3), min(7, col + 3))
        pixels = digits.preprocess(corpus.image(entry["image"]))[None]
        inside = torch.zeros_like(pixels, dtype=torch.bool)
        inside[..., top:bottom + 1, left:right + 1] = True
        noisy = torch.where(inside, pixels, torch.rand_like(pixels))

        def at_peak(x: torch.Tensor, row: int = row, col: int = col) -> float:
            seen: list[torch.Tensor] = []
            hook = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
            with torch.no_grad():
                digits.module(x)
            hook.remove()
            return float(seen[0][0, 5, row, col])

        assert at_peak(noisy) == at_peak(pixels) == pytest.approx(entry["value"], rel=1e-3)
        bigger = pixels.clone()
        bigger[..., top:bottom + 1, left:right + 1] += 1.0
        assert at_peak(bigger) != at_peak(pixels)


def test_image_descriptions_name_the_digit_and_are_scored_on_held_out_images(store: AtlasStore) -> None:
    from neurodbg.describe.image_explainer import ImageExemplarReader, ImageSimulator
    from neurodbg.describe.scoring import score

    for digit in range(10):
        page = image_neuron_page(store, LOGITS, digit)
        text, value = page["descriptions"]["+"]["text"], page["descriptions"]["+"]["score"]
        assert f"images labelled '{digit}'" in text and value >= 0.8, (digit, text, value)
    # the score is the simulator's Pearson r over held-out images only; the wrong class scores far lower
    reader = ImageExemplarReader(store)
    _, by_kind = next((n, rows) for n, rows in reader.layer(LOGITS, {3}))
    ex = reader.build(LOGITS, 3, "+", by_kind)
    assert {e.seq_index for e in ex.shown}.isdisjoint(e.seq_index for e in ex.scoring)
    best = next(d for d in __import__("neurodbg.atlas.descriptions", fromlist=["x"]).for_neuron(store, LOGITS, 3)
                if d.polarity == "+")
    assert score(ImageSimulator().simulate(best, ex.scoring), ex.scoring) == pytest.approx(best.score)
    wrong = type(best)(**{**best.__dict__, "spec": {**best.spec, "classes": {"5": 1.0}}})
    assert score(ImageSimulator().simulate(wrong, ex.scoring), ex.scoring) < best.score - 0.5


def test_search_finds_channels_by_meaning(store: AtlasStore) -> None:
    from neurodbg.search.atlas_search import AtlasSearch

    hits = AtlasSearch(store).search("images labelled '7'", k=10, layers=[LOGITS])
    assert (hits[0].layer, hits[0].neuron, hits[0].polarity) == (LOGITS, 7, "+")


def test_image_scan_resumes_to_the_same_atlas(digits: neurodbg.Model, tmp_path: Path) -> None:
    corpus = open_image_corpus("digits")
    settings = image_settings(["stem", "stages.1.blocks.1.out", "logits"], batch_size=32, max_images=320)
    whole = scan_images(digits, corpus, tmp_path / "whole", settings, progress=False)
    part = scan_images(digits, corpus, tmp_path / "parts", settings, progress=False, stop_after_batches=4)
    assert part.status == "partial" and part.sequences == 128
    resumed = scan_images(digits, corpus, tmp_path / "parts", settings, progress=False)
    assert resumed.status == "complete" and resumed.resumed_from == 128 and whole.sequences == 320

    def rows(directory: Path) -> list[tuple]:
        with sqlite3.connect(directory / "atlas.db") as conn:
            return [conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()
                    for table in ("neurons", "exemplars", "images")]

    assert rows(tmp_path / "whole") == rows(tmp_path / "parts")
    again = scan_images(digits, corpus, tmp_path / "whole", settings, progress=False)
    assert again.status == "complete"                                   # a finished atlas is left as it is
    other = image_settings(["stem"], batch_size=32, max_images=320)
    with pytest.raises(AtlasMismatchError, match="different settings"):
        scan_images(digits, corpus, tmp_path / "whole", other, progress=False)


def test_an_atlas_refuses_another_model(digits_atlas: Path, digits: neurodbg.Model, tmp_path: Path) -> None:
    from neurodbg.vision.digits_cnn import DigitsCNN

    torch.manual_seed(1)
    impostor = neurodbg.Model(DigitsCNN().eval(), name="digits", preprocess=digits.preprocess)
    with AtlasStore.open(digits_atlas) as store:
        assert model_for_atlas(store).fingerprint() == digits.fingerprint()       # its own, by the record
        with pytest.raises(AtlasMismatchError, match="different model"):
            model_for_atlas(store, impostor)
    copy = tmp_path / "copy"
    shutil.copytree(digits_atlas, copy)
    with pytest.raises(AtlasMismatchError, match="different model"):
        scan_images(impostor, open_image_corpus("digits"), copy, progress=False)


def test_folders_of_images_with_and_without_classes(digits: neurodbg.Model, tmp_path: Path) -> None:
    by_class = tmp_path / "by-class"
    for digit in (1, 7):
        (by_class / f"digit {digit}").mkdir(parents=True)
        for k in range(3):
            save_digit(first_held_out(digit), by_class / f"digit {digit}" / f"{k}.png")
    corpus = open_image_corpus(by_class)
    assert corpus.label_names == ["digit 1", "digit 7"] and len(corpus) == 6
    assert corpus.item_name(3) == "digit 7/0.png" and corpus.label(3) == 1
    summary = scan_images(digits, corpus, tmp_path / "atlas", image_settings(["stem", "logits"]), progress=False)
    assert summary.sequences == 6
    with AtlasStore.open(tmp_path / "atlas") as store:
        page = image_neuron_page(store, LOGITS, 7, exemplars=6, pictures=True)
        assert page["exemplars"]["+"][0]["label"] == "digit 7" and page["exemplars"]["+"][0]["predicted"] == "7"
        assert page["exemplars"]["+"][0]["picture"].startswith("data:image/png;base64,")
        assert page["exemplars"]["+"][0]["name"].startswith("digit 7/")
    flat = tmp_path / "flat"
    flat.mkdir()
    save_digit(first_held_out(2), flat / "two.png")
    assert open_image_corpus(flat).label_names is None and open_image_corpus(flat).label(0) == -1
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="holds no image files"):
        open_image_corpus(tmp_path / "empty")
    with pytest.raises(ImageError, match="no such folder"):
        open_image_corpus(tmp_path / "nowhere")
    (flat / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageError, match=r"cannot read .*broken\.png"):
        scan_images(digits, open_image_corpus(flat), tmp_path / "broken", image_settings(["stem"]), progress=False)


def test_a_resnet18_image_atlas_at_224_pixels(tmp_path: Path) -> None:
    """Sites whose positions shrink from 56x56 to one, 1,000 classes, JPEG exemplars, and a grid
    whose receptive fields grow with depth."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    from PIL import Image

    for k in range(6):
        Image.fromarray(rng.integers(0, 255, (240, 260, 3), dtype=np.uint8)).save(folder / f"{k}.jpg")
    model = neurodbg.load_model("resnet18", progress=False)
    sites = ["stem", "stages.0.blocks.0.out", "stages.3.blocks.1.out", "logits"]
    summary = scan_images(model, open_image_corpus(folder), tmp_path / "atlas",
                          image_settings(sites, batch_size=3, top_k=4, random_k=2), progress=False)
    assert summary.status == "complete" and summary.neurons == 64 + 64 + 512 + 1000
    with AtlasStore.open(tmp_path / "atlas") as store:
        grids = store.get_json("grids")
        assert [(grids[s]["rows"], grids[s]["cols"]) for s in sites] == [(56, 56), (56, 56), (7, 7), (1, 1)]
        assert grids["stages.0.blocks.0.out"]["after"][0] - grids["stages.0.blocks.0.out"]["before"][0] > \
            grids["stem"]["after"][0] - grids["stem"]["before"][0]
        page = image_neuron_page(store, 1, 0, exemplars=2, pictures=True)
        assert page["exemplars"]["+"][0]["picture"].startswith("data:image/jpeg;base64,")
        assert len(page["exemplars"]["+"][0]["map"]) == 56
        assert records.layer_sites(store) == {0: "stem", 1: "stages.0.blocks.0.out", 8: "stages.3.blocks.1.out",
                                              10: "logits"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = str(Path(sys.executable).with_name("neurodbg"))
    return subprocess.run([command, *args], capture_output=True, text=True, timeout=600, check=False)


def test_cli_scan_images_neuron_page_and_bad_input(digits_atlas: Path, tmp_path: Path) -> None:
    done = cli("scan", "--images", "digits", "--atlas", str(tmp_path / "a"), "--max-images", "96",
               "--sites", "stem", "--sites", "logits", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "complete" and summary["sequences"] == 96 and summary["images_per_s"] > 0
    done = cli("atlas", "neuron", "L6/N3", "--atlas", str(digits_atlas), "--examples", "4", "--json",
               "--png", str(tmp_path / "n3.png"))
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert page["site"] == "logits" and [e["label"] for e in page["exemplars"]["+"]] == ["3"] * 4
    assert (tmp_path / "n3.png").read_bytes()[:4] == b"\x89PNG"
    for args, message in ((["--images", str(tmp_path / "nowhere")], "no such folder"),
                          (["--images", "digits", "--corpus", "default"], "give one of --corpus"),
                          (["--images", "digits", "--model", "resnet1"], "unknown vision model")):
        done = cli("scan", "--atlas", str(tmp_path / "b"), *args)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
            (args, done.stderr)


def test_image_atlas_bad_reads(store: AtlasStore, small_atlas: Path) -> None:
    with pytest.raises(NeurodbgError, match="no neuron L6/N10"):
        image_neuron_page(store, LOGITS, 10)
    with AtlasStore.open(small_atlas) as text, pytest.raises(AtlasError, match="is a text atlas"):
        image_neuron_page(text, 0, 0)
    from neurodbg.describe.runner import describe_atlas

    with pytest.raises(NeurodbgError, match="statistical explainer"):
        describe_atlas(store, "openai:gpt-4o-mini", progress=False)
