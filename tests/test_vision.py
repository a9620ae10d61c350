"""Vision models: the embedded digits CNN, torchvision and Hugging Face CNNs, images in,
one image traced (issue 21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from digit_pictures import save_digit
from PIL import Image

import neurodbg
from neurodbg.errors import ImageError, ModelLoadError, NeuronIndexError, UnknownSiteError
from neurodbg.vision.image_trace import trace_image
from neurodbg.vision.images import batch_of, image_files, open_image, to_pil

NEURODBG = str(Path(sys.executable).with_name("neurodbg"))
DIGITS_SITES = ["stem", "stages.0.blocks.0.out", "stages.0.blocks.1.out", "stages.1.blocks.0.out",
                "stages.1.blocks.1.out", "pool", "logits"]


@pytest.fixture(scope="session")
def digits():
    return neurodbg.load_model("digits", progress=False)


@pytest.fixture(scope="session")
def resnet18():
    return neurodbg.load_model("resnet18", progress=False)


@pytest.fixture(scope="session")
def digit_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Held-out digits written as 64x64 PNG files (light strokes on a dark ground, as in the data)."""
    from neurodbg.train.digits import digits_data

    data = digits_data()
    folder = tmp_path_factory.mktemp("digit-images")
    paths = [save_digit(i, folder / f"{i:02d}_{int(data.y_val[i])}.png") for i in range(20)]
    return {path.name: path for path in paths}


def manual_output(module: torch.nn.Module, path: str, x: torch.Tensor) -> torch.Tensor:
    """A module's output by a plain forward hook: the independent reading."""
    seen: list[torch.Tensor] = []
    handle = dict(module.named_modules())[path].register_forward_hook(lambda m, a, o: seen.append(o.detach()))
    try:
        with torch.no_grad():
            module(x)
    finally:
        handle.remove()
    return seen[0]


# -- the embedded digits CNN ----------------------------------------------------------------------
def test_digits_cnn_is_cached_accurate_and_honest_about_its_accuracy(digits) -> None:
    from neurodbg.train.digits import digits_data
    from neurodbg.vision.digits_cnn import MIN_ACCURACY, cache_dir, images_of

    meta = json.loads((cache_dir() / "neurodbg.json").read_text())
    data = digits_data()
    with torch.no_grad():
        accuracy = float((digits.module(images_of(data.x_val)).argmax(-1) == data.y_val).float().mean())
    assert accuracy == pytest.approx(meta["accuracy"], abs=1e-9) and accuracy >= MIN_ACCURACY
    assert digits.labels == [str(d) for d in range(10)] and digits.sites == DIGITS_SITES


def test_digits_cnn_training_is_deterministic() -> None:
    from neurodbg.vision.digits_cnn import train_digits_cnn

    (a, acc_a), (b, acc_b) = train_digits_cnn(epochs=1), train_digits_cnn(epochs=1)
    assert acc_a == acc_b
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_digits_preprocess_reads_the_pictures_as_the_data(digits, digit_images) -> None:
    """A digit saved as a 64x64 PNG comes back as its own 8x8 pixels (to a grey level) and is
    classified as in the data."""
    from neurodbg.train.digits import digits_data

    data = digits_data()
    batch = batch_of(digits, [digit_images[name] for name in sorted(digit_images)])
    assert batch.shape == (20, 1, 8, 8)
    assert torch.allclose(batch.reshape(20, 64), data.x_val[:20], atol=1 / 255)
    with torch.no_grad():
        assert torch.equal(digits.module(batch).argmax(-1), digits.module(data.x_val[:20].reshape(-1, 1, 8, 8))
                           .argmax(-1))


# -- sites and fidelity --------------------------------------------------------------------------
def test_resnet18_canonical_sites_read_the_modules_they_name(resnet18) -> None:
    names = resnet18.sites
    assert names[0] == "stem" and names[-2:] == ["pool", "logits"]
    assert [n for n in names if n.startswith("stages.")] == [f"stages.{s}.blocks.{b}.out" for s in range(4)
                                                              for b in range(2)]
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    tr = resnet18.run(x, capture=names)
    paths = {"stem": "maxpool", "pool": "avgpool", "logits": "fc", "stages.2.blocks.1.out": "layer3.1"}
    for name, path in paths.items():
        assert torch.equal(tr[name][0], manual_output(resnet18.module, path, x)[0]), name
    assert tr["stages.3.blocks.1.out"].shape == (1, 512, 2, 2)


@pytest.mark.parametrize("fixture", ["digits", "resnet18"])
def test_traced_vision_run_is_bit_identical(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    channels = 1 if fixture == "digits" else 3
    x = torch.rand(2, channels, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model.module(x)
    tr = model.run(x, capture=model.sites)
    assert torch.equal(tr.output, plain)


def test_hugging_face_cnns_get_the_same_site_names(tmp_path: Path) -> None:
    from transformers import ConvNextConfig, ConvNextForImageClassification, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    resnet = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2],
                                                       num_labels=3)).eval()
    convnext = ConvNextForImageClassification(ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[2, 1],
                                                             num_labels=3)).eval()
    x = torch.randn(1, 3, 32, 32)
    for module, stem in ((resnet, "resnet.embedder"), (convnext, "convnext.embeddings")):
        model = neurodbg.load_model(module)
        blocks = [n for n in model.sites if n.startswith("stages.")]
        assert model.sites[0] == "stem" and model.sites[-1] == "logits"
        assert len(blocks) == 3
        tr = model.run(x, capture=["stem", blocks[-1], "logits"])
        assert torch.equal(tr["stem"][0], manual_output(module, stem, x)[0])
        assert torch.equal(tr["logits"], module(x).logits)


def test_torchvision_convnext_sites() -> None:
    model = neurodbg.load_model("convnext_tiny", progress=False)
    assert [n for n in model.sites if n.endswith(".blocks.0.out")] == [f"stages.{s}.blocks.0.out" for s in range(4)]
    assert sum(n.startswith("stages.3.") for n in model.sites) == 3
    assert model.labels is not None and len(model.labels) == 1000


def test_hugging_face_vision_directory_brings_its_processor_and_labels(tmp_path: Path) -> None:
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=2,
                          id2label={0: "tomato", 1: "not tomato"}, label2id={"tomato": 0, "not tomato": 1})
    ResNetForImageClassification(config).save_pretrained(tmp_path)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(tmp_path)
    model = neurodbg.load_model(str(tmp_path), progress=False)
    assert model.labels == ["tomato", "not tomato"]
    red = np.zeros((48, 48, 3), np.uint8)
    red[..., 0] = 255
    result = trace_image(model, red, "logits")
    assert [c["label"] for c in result.classes()] in (["tomato", "not tomato"], ["not tomato", "tomato"])
    assert sum(c["prob"] for c in result.classes()) == pytest.approx(1.0)


# -- one image traced ------------------------------------------------------------------------------
def test_trace_image_channel_figures_equal_a_manual_hook(digits, digit_images) -> None:
    path = digit_images[sorted(digit_images)[3]]
    result = trace_image(digits, path, "stages.0.blocks.1.out", top=5)
    x = batch_of(digits, [path])
    maps = manual_output(digits.module, "stages.0.blocks.1", x)[0]
    assert result.shape == [32, 8, 8]
    assert torch.equal(result.maxima, maps.flatten(1).amax(1)) and torch.equal(result.means, maps.flatten(1).mean(1))
    assert result.brightest == int(maps.flatten(1).amax(1).argmax())
    top = result.to_dict()["top"]
    assert [t["channel"] for t in top] == torch.argsort(-maps.flatten(1).amax(1), stable=True)[:5].tolist()
    row, col = top[0]["peak"]
    assert float(maps[top[0]["channel"], row, col]) == top[0]["max"]


def test_trace_image_logits_give_classes_sorted_by_probability(digits, digit_images) -> None:
    for path in digit_images.values():
        result = trace_image(digits, path, "logits", top=10).to_dict()
        probs = [c["prob"] for c in result["classes"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0)
        assert {c["class"] for c in result["classes"]} == set(range(10))
        assert all(c["label"] == str(c["class"]) for c in result["classes"])
    # the digits CNN gets these held-out pictures right (all but at most one of twenty)
    right = sum(trace_image(digits, p, "logits").classes()[0]["class"] == int(n.split("_")[1][0])
                for n, p in digit_images.items())
    assert right >= 19


def test_trace_image_figure(digits, digit_images, tmp_path: Path) -> None:
    result = trace_image(digits, digit_images[sorted(digit_images)[0]], "stem")
    out = result.figure(tmp_path / "f.png", channel=3)
    assert Image.open(out).format == "PNG"
    with pytest.raises(NeuronIndexError, match="channel 16 out of range"):
        result.figure(tmp_path / "g.png", channel=16)
    logits = trace_image(digits, digit_images[sorted(digit_images)[0]], "logits")
    assert Image.open(logits.figure(tmp_path / "l.png")).format == "PNG"


# -- images in --------------------------------------------------------------------------------------
def test_images_from_files_arrays_tensors_and_folders(tmp_path: Path, digit_images) -> None:
    folder = next(iter(digit_images.values())).parent
    assert [p.name for p in image_files(folder)] == sorted(digit_images)
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[1, 2] = (10, 20, 30)
    assert to_pil(rgb).size == (7, 5) and to_pil(rgb).getpixel((2, 1)) == (10, 20, 30)
    chw = torch.zeros(3, 5, 7)
    chw[:, 1, 2] = 1.0
    assert to_pil(chw).getpixel((2, 1)) == (255, 255, 255)
    grey = to_pil(np.full((4, 4), 0.5))
    assert grey.mode == "L" and grey.getpixel((0, 0)) == 128
    jpeg = tmp_path / "x.jpg"
    Image.fromarray(rgb).save(jpeg)
    assert open_image(jpeg).mode == "RGB"


def test_bad_images_are_typed_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImageError, match="no such image file"):
        open_image(tmp_path / "missing.png")
    text = tmp_path / "not.png"
    text.write_text("hello")
    with pytest.raises(ImageError, match="not an image Pillow can decode"):
        open_image(text)
    big = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(big)
    import neurodbg.vision.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageError, match="too many pixels"):
        open_image(big)
    with pytest.raises(ImageError, match="NaN"):
        to_pil(np.full((4, 4), np.nan))
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        to_pil(np.full((4, 4), 3.0))
    with pytest.raises(ImageError, match="shape"):
        to_pil(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ImageError, match="holds no image files"):
        image_files(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else tmp_path)


def test_bad_vision_models_and_sites(digits, tmp_path: Path) -> None:
    with pytest.raises(UnknownSiteError, match=r"stages\.\{s\}\.blocks\.\{b\}\.out"):
        trace_image(digits, np.zeros((8, 8)), "stages.7.blocks.0.out")
    with pytest.raises(ModelLoadError, match="no such weights file"):
        neurodbg.load_model("resnet18", weights=tmp_path / "none.pth", progress=False)
    wrong = tmp_path / "digits.pth"
    torch.save(digits.module.state_dict(), wrong)
    with pytest.raises(ModelLoadError, match="does not fit ResNet"):
        neurodbg.load_model("resnet18", weights=wrong, progress=False)
    with pytest.raises(ModelLoadError, match="--weights goes with a vision model"):
        neurodbg.load_model("default", weights=wrong, progress=False)


def test_torchvision_weights_file_loads(resnet18, tmp_path: Path) -> None:
    state = {k: v + 1 if v.is_floating_point() else v for k, v in resnet18.module.state_dict().items()}
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": state}, path)
    loaded = neurodbg.load_model("resnet18", weights=path, progress=False)
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in state.items())
    assert loaded.source == "resnet18 (resnet18.pth)" and loaded.labels is not None and loaded.labels[0] == "tench"


# -- the command line ------------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([NEURODBG, *args], capture_output=True, text=True, env=env, timeout=300, check=False)


def test_cli_vision_trace(digits, digit_images, tmp_path: Path) -> None:
    name = sorted(digit_images)[0]
    r = cli("vision", "trace", str(digit_images[name]), "--site", "logits", "--json", "--png", str(tmp_path / "o.png"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["classes"][0]["class"] == int(name.split("_")[1][0]) and out["model"] == "digits"
    assert Image.open(out["png"]).format == "PNG"
    r = cli("vision", "trace", str(digit_images[name]), "--site", "stem", "--top", "3")
    assert r.returncode == 0 and "brightest" in r.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["vision", "trace", "/nonexistent.png"], "no such image file"),
    (["vision", "trace", "IMG", "--site", "nowhere"], "unknown site 'nowhere'"),
    (["vision", "trace", "IMG", "--model", "resnet9000"], "unknown vision model 'resnet9000'; did you mean"),
])       # (channel and weights errors: the library tests above; each case here is a whole process)
def test_cli_vision_trace_bad_input(args: list[str], message: str, digits, digit_images, tmp_path: Path) -> None:
    image = str(digit_images[sorted(digit_images)[0]])
    r = cli(*[image if a == "IMG" else str(tmp_path / "o.png") if a == "OUT" else a for a in args])
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- interventions on channels -----------------------------------------------------------------------
def edited_by_hand(model, site_path: str, x: torch.Tensor, edit) -> torch.Tensor:
    """The model's logits with a forward hook editing `site_path`'s output by hand."""
    handle = dict(model.module.named_modules())[site_path].register_forward_hook(lambda m, a, o: edit(o.clone()))
    try:
        with torch.no_grad():
            return model.module(x)
    finally:
        handle.remove()


def test_channel_interventions_equal_editing_by_hand(digits) -> None:
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))

    def ablate(o: torch.Tensor) -> torch.Tensor:
        o[:, [3, 5]] = 0
        return o

    def set_at(o: torch.Tensor) -> torch.Tensor:        # positions 0 and 9 (row 1, column 1) of an 8x8 map
        o[:, 7, 0, 0] = 2.5
        o[:, 7, 1, 1] = 2.5
        return o

    def scale_last(o: torch.Tensor) -> torch.Tensor:    # position -1: the last of the 4x4 map
        o[:, 60, 3, 3] *= 3.0
        return o

    cases = [
        ({"op": "ablate", "site": "stages.0.blocks.1.out", "neurons": [3, 5]}, "stages.0.blocks.1", ablate),
        ({"op": "set", "site": "stages.0.blocks.0.out", "neurons": [7], "tokens": [0, 9], "value": 2.5},
         "stages.0.blocks.0", set_at),
        ({"op": "scale", "site": "stages.1.blocks.1.out", "neurons": [60], "tokens": [-1], "factor": 3.0},
         "stages.1.blocks.1", scale_last),
    ]
    for spec, path, edit in cases:
        tr = digits.run(x, interventions=[spec])
        assert torch.equal(tr.output, edited_by_hand(digits, path, x, edit)), spec["op"]
    with pytest.raises(NeuronIndexError, match="which has 32 neurons"):
        digits.run(x, interventions=[{"op": "ablate", "site": "stages.0.blocks.1.out", "neurons": [32]}])
    with pytest.raises(NeuronIndexError, match="positions 0-15"):
        digits.run(x, interventions=[{"op": "ablate", "site": "stages.1.blocks.0.out", "neurons": [0],
                                      "tokens": [16]}])


def test_patching_a_channel_from_another_image(digits) -> None:
    a, b = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3)), torch.zeros(1, 1, 8, 8)
    source = digits.run(b, capture=["stem"])
    tr = digits.run(a, interventions=[{"op": "patch", "site": "stem", "neurons": [4], "source": "blank"}],
                    sources={"blank": source.captures})

    def patch(o: torch.Tensor) -> torch.Tensor:
        o[:, 4] = source["stem"][:, 4]
        return o

    assert torch.equal(tr.output, edited_by_hand(digits, "stem", a, patch))


# -- vision transformers: the language models' site names, patch tokens as positions ---------------
def test_vision_transformers_get_language_model_site_names() -> None:
    from transformers import DeiTConfig, DeiTForImageClassification, ViTConfig, ViTForImageClassification

    from neurodbg.vision.torchvision_import import import_torchvision

    torch.manual_seed(0)
    small = {"image_size": 32, "patch_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
             "hidden_size": 16, "intermediate_size": 32, "num_labels": 3}
    tv = import_torchvision().models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                       hidden_dim=16, mlp_dim=32, num_classes=3).eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    for module, act_path in ((ViTForImageClassification(ViTConfig(**small)).eval(), "vit.layers.1.mlp.fc2"),
                             (DeiTForImageClassification(DeiTConfig(**small)).eval(), "deit.layers.1.mlp.fc2"),
                             (tv, "encoder.layers.encoder_layer_1.mlp.3")):
        model = neurodbg.load_model(module)
        assert model.n_layers == 2 and model.sites[-1] == "logits"
        assert {f"layers.{i}.{s}" for i in range(2) for s in ("resid_in", "attn.out", "mlp.act", "resid_out")} \
            <= set(model.sites)
        seen: list[torch.Tensor] = []
        handle = dict(module.named_modules())[act_path].register_forward_pre_hook(
            lambda m, args, seen=seen: seen.append(args[0].detach()))
        with torch.no_grad():
            plain = module(x)
        handle.remove()
        tr = model.run(x, capture=model.sites)
        assert torch.equal(tr["layers.1.mlp.act"], seen[0])
        assert torch.equal(tr.output if isinstance(tr.output, torch.Tensor) else tr.output.logits,
                           plain if isinstance(plain, torch.Tensor) else plain.logits)
        # the 16 patch tokens after the class token are the positions: a 4 x 4 map per hidden unit
        model.preprocess = lambda image: torch.from_numpy(np.asarray(image.convert("RGB").resize((32, 32)),
                                                                     dtype=np.float32) / 255).permute(2, 0, 1)
        result = trace_image(model, np.zeros((32, 32, 3), np.uint8), "layers.1.mlp.act")
        assert result.shape[1] == 32 and list(result.maps.shape) == [32, 4, 4]     # DeiT adds a distillation token


def test_torchvision_vit_b_16_by_name() -> None:
    model = neurodbg.load_model("vit_b_16", progress=False)
    assert model.n_layers == 12 and "layers.11.mlp.act" in model.sites and model.family == "vit"


def test_inspect_a_vision_model(digits) -> None:
    from neurodbg.inspect.report import report_model

    report = report_model(digits).to_dict()
    assert report["total_params"] == sum(p.numel() for p in digits.module.parameters()) == 70_122
    assert report["tree"]["children"][0]["output_shape"] == [1, 16, 8, 8]   # the stem, from one probe picture
    vit = report_model(neurodbg.load_model("vit_b_16", progress=False)).to_dict()
    assert vit["n_layers"] == 12 and vit["neurons_per_layer"] == 3072


def test_cli_vision_trace_with_an_intervention(digits, digit_images, tmp_path: Path) -> None:
    image = str(digit_images[sorted(digit_images)[0]])
    plain = json.loads(cli("vision", "trace", image, "--site", "stem", "--json", "--top", "16").stdout)
    brightest = plain["brightest"]
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps([{"op": "ablate", "site": "stem", "neurons": [brightest]}]))
    r = cli("vision", "trace", image, "--site", "stem", "--json", "--top", "16", "--intervene", str(edits))
    assert r.returncode == 0, r.stderr
    edited = {row["channel"]: row for row in json.loads(r.stdout)["top"]}
    assert edited[brightest]["max"] == 0.0 and json.loads(r.stdout)["brightest"] != brightest
    edits.write_text("[{")
    r = cli("vision", "trace", image, "--intervene", str(edits))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize(("name", "family", "block_path"), [
    ("vgg11", "vgg", "features.4"),                  # stage 1 is the convolution after the first pooling
    ("mobilenet_v2", "mobilenet", "features.2"),     # the first strided inverted residual starts stage 1
    ("mobilenet_v3_small", "mobilenet", "features.2"),
    ("efficientnet_b0", "efficientnet", "features.2.0"),
])
def test_torchvision_families_staged_by_resolution(name: str, family: str, block_path: str) -> None:
    model = neurodbg.load_model(name, progress=False)
    assert model.family == family and model.sites[-1] == "logits"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    tr = model.run(x, capture=model.sites)
    assert torch.equal(tr["stages.1.blocks.0.out"][0], manual_output(model.module, block_path, x)[0])
    with torch.no_grad():
        assert torch.equal(tr.output, model.module(x))
    sides = [int(tr[n].shape[-1]) for n in model.sites if n.startswith("stages.") and n.endswith("blocks.0.out")]
    assert sides == sorted(sides, reverse=True) and len(set(sides)) >= 3     # each stage one resolution, falling
