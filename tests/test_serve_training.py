"""The web app's Training view over real digits runs: the runs API (names, never paths),
and in a real headless Chromium the findings and curves of a finished run and a run in
progress followed live until it finishes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from test_serve_browser import assert_translated, browser, new_page, shots  # noqa: F401  (fixtures shared with the browser tests)

import neurodbg
from neurodbg.train.digits import digits_data, mlp, train
from neurodbg.train.runs import findings


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    data = digits_data()
    net = mlp([64, 128, 64, 10])
    train(net, torch.optim.Adam(net.parameters(), 1e-3), data, steps=300, run=root / "healthy")
    net = mlp([64, 128, 64, 10])
    with torch.no_grad():
        net[0].bias.fill_(-5.0)
    train(net, torch.optim.Adam(net.parameters(), 1e-3), data, steps=100, run=root / "dead-relu")
    return root


@pytest.fixture(scope="module")
def training_url(default_model: neurodbg.Model, runs: Path) -> Iterator[str]:
    from serving import running

    from neurodbg.analyze.monitor import Monitor
    from neurodbg.serve import create_app

    with running(create_app(Monitor(default_model), runs=runs)) as url:
        yield url


def test_the_runs_api(training_url: str, runs: Path, served: str) -> None:
    listing = httpx.get(f"{training_url}/api/runs", timeout=60).json()["runs"]
    assert {r["name"] for r in listing} == {"healthy", "dead-relu"}
    dead = httpx.get(f"{training_url}/api/runs/dead-relu", timeout=60).json()
    assert dead["findings"] == [f.to_dict() for f in findings(runs / "dead-relu")]
    assert dead["status"] == "finished" and dead["steps"] == 100
    assert len(dead["curves"]["loss"]) == 100 and set(dead["dead"]) == {"1:output", "3:output"}
    thin = httpx.get(f"{training_url}/api/runs/healthy", params={"points": 50}, timeout=60).json()
    assert len(thin["curves"]["loss"]) == 50 and thin["curves"]["loss"][-1][0] == 299 and thin["findings"] == []
    for name, status in (("nope", 404), ("..", 404), ("a%2Fb", 404), ("%2E%2E%2Fhealthy", 404)):
        r = httpx.get(f"{training_url}/api/runs/{name}", timeout=60)
        assert r.status_code in (status, 422) and r.json()["detail"], (name, r.status_code, r.text)
    assert httpx.get(f"{training_url}/api/info", timeout=60).json()["runs"] is True
    r = httpx.get(f"{served}/api/runs", timeout=60)           # a server started without --runs
    assert r.status_code == 400 and "--runs" in r.json()["detail"]


def test_the_training_view_follows_a_run_live(browser, training_url: str, runs: Path, shots: Path) -> None:  # noqa: F811
    page, errors = new_page(browser, training_url)
    page.click('.tabs button[data-tab="training"]')
    page.wait_for_selector("#run-select option", state="attached")
    page.select_option("#run-select", "dead-relu")
    page.wait_for_function("document.querySelector('#run-view').textContent.includes('dead_units')")
    view = page.locator("#run-view")
    assert "1:output" in view.inner_text() and "What usually helps" in view.inner_text()
    assert page.locator("#run-view svg.chart").count() >= 2 and page.locator("#run-view canvas").count() == 1
    page.select_option("#run-select", "healthy")
    page.wait_for_function("document.querySelector('#run-view').textContent.includes('No findings')")
    page.screenshot(path=str(shots / "training.png"), full_page=True)
    assert_translated(page)

    # a run in progress: the view asks again every two seconds while it runs
    gate = threading.Event()

    def slow_training() -> None:
        net = mlp([64, 64, 10])
        opt = torch.optim.SGD(net.parameters(), 0.05)
        data = digits_data()
        with neurodbg.watch(net, opt, run=runs / "live", flush_every=5) as w:
            for step in range(60):
                x, y = data.x_train[:64], data.y_train[:64]
                loss = torch.nn.functional.cross_entropy(net(x), y)
                w.log(loss=loss)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step == 10:
                    gate.set()
                time.sleep(0.1)

    worker = threading.Thread(target=slow_training)
    worker.start()
    try:
        assert gate.wait(60)
        page.click('.tabs button[data-tab="neurons"]')
        page.click('.tabs button[data-tab="training"]')           # reload the list: the new run is there
        page.wait_for_selector("#run-select option[value='live']", state="attached")
        page.select_option("#run-select", "live")
        page.wait_for_function("document.querySelector('#run-status').textContent.startsWith('running')")
        first = int(page.locator("#run-status").inner_text().split("·")[1].split()[0])
        page.wait_for_function("document.querySelector('#run-status').textContent.startsWith('finished')",
                               timeout=120_000)
        last = int(page.locator("#run-status").inner_text().split("·")[1].split()[0].replace(",", ""))
        assert first < last == 60
    finally:
        worker.join()
    assert errors == []
