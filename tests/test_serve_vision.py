"""The web app's Vision view: uploaded images (bytes, never paths) traced on the digits
CNN over a real HTTP server, and in a real headless Chromium an image uploaded, its
channels and feature maps shown, a channel's maximisation picture drawn, and model
text escaped."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from digit_pictures import first_held_out, save_digit
from PIL import Image
from test_serve_browser import assert_translated, browser, new_page, shots  # noqa: F401  (fixtures shared with the browser tests)

import neurodbg
from neurodbg.vision.image_trace import trace_image


@pytest.fixture(scope="module")
def digits():
    model = neurodbg.load_model("digits", progress=False)
    model.labels = [f"<b>{d}</b>" for d in range(10)]          # model text the page must show, not render
    return model


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_digit(first_held_out(4), tmp_path_factory.mktemp("four") / "four.png")


@pytest.fixture(scope="module")
def vision_url(default_model: neurodbg.Model, digits, digits_atlas: Path) -> Iterator[str]:
    from serving import running

    from neurodbg.analyze.monitor import Monitor
    from neurodbg.serve import Limits, create_app
    from neurodbg.vision.image_atlas import open_image_atlas

    model, atlas = open_image_atlas(digits_atlas, digits)
    assert model is digits
    with running(create_app(Monitor(default_model), vision=digits, vision_atlas=atlas,
                            limits=Limits(max_image_bytes=200_000, max_maximize_steps=64))) as url:
        yield url
    atlas.close()


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_the_vision_api(vision_url: str, digits, four: Path) -> None:
    info = httpx.get(f"{vision_url}/api/vision", timeout=60).json()
    assert info["model"] == "digits" and "stages.1.blocks.1.out" in info["sites"]
    assert httpx.get(f"{vision_url}/api/info", timeout=60).json()["vision"] == "digits"
    r = httpx.post(f"{vision_url}/api/vision/trace", json={"image": b64(four), "site": "stages.0.blocks.1.out",
                                                            "top": 8}, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    want = trace_image(digits, four, "stages.0.blocks.1.out", top=8).to_dict()
    assert [t["channel"] for t in out["top"]] == [t["channel"] for t in want["top"]]
    assert [t["max"] for t in out["top"]] == [t["max"] for t in want["top"]]
    assert all(len(t["map"]) == 8 and len(t["map"][0]) == 8 for t in out["top"])
    assert out["classes"][0]["label"] == "<b>4</b>" and out["image_size"] == [64, 64]
    m = httpx.post(f"{vision_url}/api/vision/maximize", json={"site": "stem", "channel": 3, "steps": 16},
                   timeout=120).json()
    pixels = torch.tensor(m["pixels"], dtype=torch.float32)
    assert pixels.shape == (8, 8, 3) and m["objective"] > m["grey_objective"]
    assert httpx.post(f"{vision_url}/api/vision/maximize", json={"site": "stem", "channel": 3, "steps": 16},
                      timeout=120).json() == m                                       # kept, not recomputed


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"image": "not base64!", "site": "stem"}, 400, "not base64"),
    ({"image": base64.b64encode(b"hello").decode(), "site": "stem"}, 400, "not an image Pillow can decode"),
    ({"image": "IMAGE", "site": "nowhere"}, 400, "unknown site"),
    ({"image": "IMAGE", "site": "stem", "top": 65}, 422, "top"),
    ({"image": "IMAGE", "path": "/etc/passwd"}, 422, "path"),
    ({"image": "BIG", "site": "stem"}, 400, "this server accepts at most 200,000"),
    ({"image": "HUGE", "site": "stem"}, 413, "request body over"),
])
def test_bad_vision_requests(vision_url: str, four: Path, body: dict, status: int, message: str) -> None:
    huge = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(huge, "PNG")
    swap = {"IMAGE": b64(four), "BIG": base64.b64encode(b"\x89PNG" + bytes(200_997)).decode(),   # checked decoded
            "HUGE": base64.b64encode(huge.getvalue()).decode()}                               # refused at the door
    body = {k: swap.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    r = httpx.post(f"{vision_url}/api/vision/trace", json=body, timeout=120)
    assert r.status_code == status and message in r.json()["detail"], r.text


def test_channel_pages_and_search_from_the_image_atlas(vision_url: str) -> None:
    info = httpx.get(f"{vision_url}/api/vision", timeout=60).json()
    assert info["atlas"] == {"sites": ["stem", "stages.0.blocks.0.out", "stages.0.blocks.1.out",
                                       "stages.1.blocks.0.out", "stages.1.blocks.1.out", "pool", "logits"],
                             "images": 1797, "corpus": "digits"}
    page = httpx.get(f"{vision_url}/api/vision/neuron", params={"site": "logits", "channel": 3, "exemplars": 5},
                     timeout=60).json()
    assert page["id"] == "L6/N3" and [e["label"] for e in page["exemplars"]["+"]] == ["3"] * 5
    first = page["exemplars"]["+"][0]
    picture = Image.open(io.BytesIO(base64.b64decode(first["picture"].split(",", 1)[1])))
    assert picture.size == (8, 8) and first["field"] == [0, 0, 7, 7]
    assert "images labelled '3'" in page["descriptions"]["+"]["text"]
    hits = httpx.get(f"{vision_url}/api/vision/search", params={"q": "images labelled '3'"}, timeout=120).json()
    assert {"site": "logits", "channel": 3} in [{"site": h["site"], "channel": h["channel"]} for h in hits["hits"][:5]]
    for params, status, message in (({"site": "logits", "channel": 10}, 404, "no neuron L6/N10"),
                                    ({"site": "nowhere", "channel": 0}, 400, "unknown site"),
                                    ({"site": "stem", "channel": -1}, 422, "channel"),
                                    ({"site": "/etc/passwd", "channel": 0}, 400, "unknown site")):
        r = httpx.get(f"{vision_url}/api/vision/neuron", params=params, timeout=60)
        assert r.status_code == status and message in r.json()["detail"], (params, r.text)


def test_bad_maximize_requests(vision_url: str) -> None:
    for body, status, message in (({"site": "stem", "channel": 16, "steps": 8}, 404, "channel 16 out of range"),
                                  ({"site": "stem", "channel": 1, "steps": 65}, 400, "over this server's limit"),
                                  ({"site": "stem", "channel": -1}, 422, "channel")):
        r = httpx.post(f"{vision_url}/api/vision/maximize", json=body, timeout=120)
        assert r.status_code == status and message in r.json()["detail"], (body, r.text)
    r = httpx.get(f"{vision_url.replace('127.0.0.1', 'localhost')}/api/vision", timeout=60)
    assert r.status_code == 200                                   # loopback names are fine; paths never taken


def test_the_vision_view(browser, vision_url: str, four: Path, shots: Path) -> None:  # noqa: F811
    page, errors = new_page(browser, vision_url)
    page.wait_for_selector("#vision-tab:not([hidden])")
    page.click('.tabs button[data-tab="vision"]')
    page.wait_for_selector("#vision-site option", state="attached")
    assert page.input_value("#vision-site") == "stages.1.blocks.1.out"
    page.set_input_files("#vision-file", str(four))
    page.wait_for_selector("#vision-view canvas.fmap")
    view = page.locator("#vision-view")
    assert "brightest: channel" in view.inner_text() and page.locator("#vision-view canvas.fmap").count() == 16
    assert "<b>4</b>" in page.locator("ol.classes li").first.inner_text()      # shown as text, not bold
    assert page.locator("ol.classes b").count() == 0
    page.select_option("#vision-site", "stem")
    page.wait_for_function("document.querySelector('#vision-view').textContent.includes('stem: output')")
    page.locator("#vision-view button.link").first.click()
    page.wait_for_selector("#vision-channel canvas.maximized")
    assert "objective" in page.locator("#vision-channel").inner_text()
    assert page.locator("#vision-channel canvas.exemplar").count() == 16     # the atlas's top images
    page.screenshot(path=str(shots / "vision.png"), full_page=True)
    page.fill("#vision-query", "images labelled '5'")
    page.click("#vision-search-form button")
    page.wait_for_selector("#vision-results button.link")
    page.get_by_role("button", name="logits · channel 5+").click()
    page.wait_for_function("document.querySelector('#vision-channel h3').textContent === 'logits · channel 5'")
    page.wait_for_selector("#vision-channel canvas.exemplar")
    assert "images labelled '5'" in page.locator("#vision-channel").inner_text()
    page.wait_for_selector("#vision-channel canvas.maximized")
    page.screenshot(path=str(shots / "vision-channel.png"), full_page=True)
    assert_translated(page)
    assert not errors, errors
