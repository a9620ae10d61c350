"""End to end in a real headless Chromium (Debian's, driven by Playwright): chat,
hover, click a token, open a neuron, steer and compare, save and load a spec,
the lens, attention and search, in English and in Chinese with no string left
untranslated — and hostile model and corpus text shown, never run.
Screenshots go to $NEURODBG_SCREENSHOTS (the README's) or the test's tmp dir."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import neurodbg
from neurodbg.trace.interventions import loads

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CASE = "Q: Which number is bigger, 9.11 or 9.9?\nA: 9."
HOSTILE = ['<script>window.__xss = 1</script>', '"><img src=x onerror="window.__xss = 2">',
           "<b onmouseover=alert(3)>bold</b>"]
T = json.loads((Path(neurodbg.__file__).parent / "serve" / "static" / "i18n.json").read_text(encoding="utf-8"))


def tr(lang: str, key: str, **values: object) -> str:
    """The page's text for `key` in `lang`, placeholders filled as app.js fills them."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m[1]]) if m[1] in values else m[0], T[lang][key])


def before_values(lang: str, key: str) -> str:
    """The text of `key` up to its first placeholder (and an opening bracket right before it)."""
    return T[lang][key].split("{")[0].rstrip(" (（")


# every text node and title/placeholder/alt outside model data (translate="no"), user input and the switch
UI_TEXT = """() => {
  const skip = (e) => e.closest('[translate="no"], textarea, script, style, #lang');
  const texts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.textContent.trim() && !skip(n.parentElement)) texts.push(n.textContent);
  }
  for (const e of document.body.querySelectorAll("[title], [placeholder], [alt]")) {
    if (skip(e)) continue;
    for (const name of ["title", "placeholder", "alt"]) if (e.getAttribute(name)) texts.push(e.getAttribute(name));
  }
  return texts.join("\\n");
}"""


def english_left(page) -> list[str]:
    """The English UI strings (each text between placeholders with a word of two letters or more, where
    the Chinese differs) that the page's own text (model data aside) still shows."""
    shown = page.evaluate(UI_TEXT)
    pieces = {piece for chinese in T["zh"].values() for piece in re.split(r"\{\w+\}", chinese) if piece.strip()}
    for piece in sorted(pieces, key=len, reverse=True):      # Chinese strings may quote English examples
        shown = shown.replace(piece, "\n")
    left = []
    for key, english in T["en"].items():
        chinese = T["zh"][key]
        for piece in re.split(r"\{\w+\}", english):
            piece = piece.strip()
            if not re.search(r"[A-Za-z]{2,}", piece) or piece in chinese:
                continue
            if re.search(rf"(?<![A-Za-z]){re.escape(piece)}(?![A-Za-z])", shown):
                left.append(f"{key}: {piece}")
    return left


def assert_translated(page) -> None:
    """Switched to Chinese, the page shows no English UI string and misses no key; then back to English."""
    page.select_option("#lang", "zh")
    assert english_left(page) == [] and page.evaluate("window.__i18nMissing") == []
    page.select_option("#lang", "en")


def chromium_path() -> str:
    path = os.environ.get("NEURODBG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is not installed; scripts/setup.sh installs Debian's chromium (or set "
                    "NEURODBG_CHROMIUM to a Chromium binary)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("NEURODBG_SCREENSHOTS")
    directory = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def walkthrough_url(request: pytest.FixtureRequest, default_model: neurodbg.Model) -> Iterator[str]:
    """The test server; or, with $NEURODBG_SCREENSHOT_ATLAS, a server over that atlas (the README's
    screenshots come from the full default-model atlas this way)."""
    atlas = os.environ.get("NEURODBG_SCREENSHOT_ATLAS")
    if not atlas:
        yield request.getfixturevalue("served")
        return
    from serving import running

    from neurodbg.analyze.monitor import Monitor
    from neurodbg.serve import create_app

    with running(create_app(Monitor(default_model, atlas))) as url:
        yield url


def new_page(browser, url: str, *, locale: str = "en-US", lang: str | None = None):
    """A page in a fresh browser context with the language `locale` (and `?lang=` when given)."""
    # bypass_csp: Playwright's waits evaluate scripts, which the page's CSP forbids; escaping is
    # tested without the CSP's help
    context = browser.new_context(bypass_csp=True, viewport={"width": 1440, "height": 900}, accept_downloads=True,
                                  locale=locale)
    page = context.new_page()
    page.set_default_timeout(180_000)       # a shared 2-core machine can be slow; waits end as soon as they can
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url.rstrip("/") + "/" + (f"?lang={lang}" if lang else ""))
    page.wait_for_selector("#model-info:not(:empty)")
    return page, errors


def send(page, text: str, *, chat: bool, max_new: int, lang: str = "en") -> None:
    page.set_checked("#chat-mode", chat)
    page.fill("#max-new", str(max_new))
    page.fill("#chat-input", text)
    page.click("#send")
    page.wait_for_function(f"document.querySelector('#send').textContent === {json.dumps(T[lang]['chat.send'])} && "
                           "document.querySelectorAll('#conversation .tok.generated').length > 0", timeout=120_000)


def wait_idle(page) -> None:
    page.wait_for_function("document.querySelector('#progress').hidden", timeout=180_000)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_9_11_walkthrough(browser, walkthrough_url: str, shots: Path, tmp_path: Path, lang: str) -> None:
    page, errors = new_page(browser, walkthrough_url, lang=lang)
    suffix = "" if lang == "en" else f"-{lang}"        # the README's screenshots are the English ones

    def shot(name: str) -> str:
        return str(shots / f"{name}{suffix}.png")

    assert page.evaluate("document.documentElement.lang") == {"en": "en", "zh": "zh-CN"}[lang]
    send(page, CASE, chat=False, max_new=6, lang=lang)
    tokens = page.locator("#conversation .tok")
    first_generated = page.locator("#conversation .tok.generated").first
    assert first_generated.inner_text() == "1"         # the model answers 9.11

    first_generated.hover()
    tip = page.locator("#tooltip")
    assert tip.is_visible() and T[lang]["tip.chosen_among"] in tip.inner_text() and '"9"' in tip.inner_text()
    page.screenshot(path=shot("chat"))

    first_generated.click()
    page.wait_for_selector("#analysis details.cluster")
    wait_idle(page)
    page.select_option("#rank", "pos")          # the neurons that raise "1" (the wrong answer) most
    page.select_option("#top", "300")
    page.wait_for_function(f"document.querySelector('#analysis').textContent.includes("
                           f"{json.dumps(tr(lang, 'analysis.all', n=300))})")
    wait_idle(page)
    why = T[lang]["analysis.why"].split("{position}")[0]
    assert why.format(target='"1"', token='"."') in page.locator("#analysis").inner_text()
    clusters = page.locator("#analysis details.cluster:has(summary strong)")
    assert clusters.count() >= 1
    digits = page.locator("#analysis details.cluster:has(summary strong:has-text('digits'))")
    chosen = digits.first if digits.count() else clusters.first
    chosen.locator("summary").click()
    chosen.scroll_into_view_if_needed()
    page.screenshot(path=shot("neurons"))
    values = [float(v) for v in chosen.locator("tr td:nth-child(2)").all_inner_texts()]
    assert values and all(v > 0 for v in values)             # each raises the target

    chosen.locator("a.nid").first.click()
    page.wait_for_selector("#neuron-page .exemplar")
    wait_idle(page)
    page_text = page.locator("#neuron-page").inner_text()
    assert all(T[lang][key] in page_text for key in ("neuron.drives_up", "neuron.top_exemplars", "neuron.promotes"))
    assert page.locator("#neuron-page canvas.hist").count() == 1
    highlighted = page.locator("#neuron-page .exemplar span[title]").evaluate_all(
        "spans => spans.filter(s => s.style.background && s.style.background !== 'transparent').length")
    assert highlighted > 0
    page.screenshot(path=shot("neuron"), full_page=True)
    page.locator("#neuron-page button", has_text=before_values(lang, "neuron.candidates")).first.click()
    page.wait_for_selector("#neuron-page ol li")

    # steer: ablate the first cluster, compare before and after
    page.click('.tabs button[data-tab="neurons"]')
    chosen.get_by_text(T[lang]["cluster.ablate"]).click()
    assert page.locator("#steer-neurons").input_value().startswith("L")
    page.fill("#steer-max", "6")
    page.click("#steer-preview")
    page.wait_for_selector("#steer-preview-list table")
    page.click("#steer-apply")
    page.wait_for_selector("#steer-result .compare")
    wait_idle(page)
    result = page.locator("#steer-result").inner_text()
    assert T[lang]["compare.before"] in result and before_values(lang, "steer.after") in result
    assert 'p("1")' in result and "Δ" in result
    page.screenshot(path=shot("steer"))

    with page.expect_download() as download:
        page.click("#steer-save")
    saved = tmp_path / "steering.json"
    download.value.save_as(saved)
    interventions = loads(saved.read_text())
    assert interventions and all(i.site.endswith("mlp.act") for i in interventions)

    after = page.locator("#steer-result .compare div").nth(1).inner_text()
    page.set_input_files("#steer-load", str(saved))
    page.wait_for_selector("#steer-loaded button")
    page.evaluate("document.querySelector('#steer-result').replaceChildren()")
    page.click("#steer-apply")
    page.wait_for_selector("#steer-result .compare")
    assert page.locator("#steer-result .compare div").nth(1).inner_text() == after   # the replay agrees

    page.click('.tabs button[data-tab="lens"]')
    page.wait_for_selector("#lens table.lens td")
    wait_idle(page)
    assert page.locator("#lens table.lens tr").count() == 31          # header + 30 layers
    page.screenshot(path=shot("lens"))

    page.click('.tabs button[data-tab="attention"]')
    page.wait_for_selector("#attention canvas")
    page.select_option("#att-layer", "5")
    layer_5 = T[lang]["attention.caption"].split("{head}")[0].replace("{layer}", "5")
    page.wait_for_function(f"document.querySelector('#attention p').textContent.includes({json.dumps(layer_5)})")
    wait_idle(page)
    page.screenshot(path=shot("attention"))

    page.fill("#search-input", "digits and numbers")
    page.click("#search-form button")
    page.wait_for_selector("#search-results table a.nid", timeout=180_000)
    wait_idle(page)
    assert "digits" in page.locator("#search-results").inner_text()
    page.screenshot(path=shot("search"))
    page.locator("#search-results a.nid").first.click()
    page.wait_for_selector("#neuron-page .exemplar")
    wait_idle(page)
    # a floor on coherence hides the weaker clusters and says how many it hid
    page.click('.tabs button[data-tab="neurons"]')
    page.fill("#min-coherence", "1")
    page.dispatch_event("#min-coherence", "change")
    page.wait_for_selector("#analysis .hidden-clusters")
    wait_idle(page)
    assert page.locator("#analysis details.cluster:has(summary strong)").count() == 0
    assert T[lang]["analysis.hidden_clusters"].split("{threshold}")[1] in page.inner_text("#analysis .hidden-clusters")
    assert not errors, errors
    assert tokens.count() > 20
    # every string the walk showed came from the dictionary, in this language
    assert page.evaluate("window.__i18nMissing") == []
    if lang == "zh":
        assert english_left(page) == []
    page.context.close()


def test_the_language_is_the_browsers_until_chosen_and_the_choice_is_remembered(
        browser, served: str, default_model: neurodbg.Model) -> None:
    from serving import running

    from neurodbg.analyze.monitor import Monitor
    from neurodbg.serve import create_app

    for locale, lang in (("zh-CN", "zh"), ("en-US", "en")):
        page, errors = new_page(browser, served, locale=locale)
        assert page.evaluate("document.documentElement.lang") == {"en": "en", "zh": "zh-CN"}[lang]
        assert page.input_value("#lang") == lang and page.inner_text("#send") == T[lang]["chat.send"]
        assert page.get_attribute("#search-input", "placeholder") == T[lang]["search.placeholder"]
        assert not errors, errors
        page.context.close()

    # chosen in an English browser: the page changes in place, keeping the conversation and the views
    page, errors = new_page(browser, served)
    send(page, "Hi", chat=False, max_new=2)
    shown = page.locator("#conversation .tok").count()
    page.click('.tabs button[data-tab="neuron"]')
    page.fill("#neuron-id", "L0/N3")
    page.click("#neuron-form button")
    page.wait_for_selector("#neuron-page .exemplar")
    wait_idle(page)
    assert T["en"]["neuron.drives_up"] in page.inner_text("#neuron-page")
    page.evaluate("window.__same_page = true")
    page.select_option("#lang", "zh")
    assert page.evaluate("window.__same_page") is True                      # not reloaded
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert T["zh"]["neuron.drives_up"] in page.inner_text("#neuron-page")    # drawn again in Chinese
    assert page.locator("#conversation .tok").count() == shown
    assert page.inner_text('.tabs button[data-tab="steer"]') == T["zh"]["tab.steer"]
    assert before_values("zh", "info.atlas") in page.inner_text("#model-info")
    assert page.evaluate("localStorage.getItem('neurodbg.lang')") == "zh"
    page.reload()
    page.wait_for_selector("#model-info:not(:empty)")
    assert page.input_value("#lang") == "zh" and page.inner_text("#send") == T["zh"]["chat.send"]
    page.goto(served + "/?lang=en")                    # an address's ?lang= outranks the remembered choice
    page.wait_for_selector("#model-info:not(:empty)")
    assert page.inner_text("#send") == T["en"]["chat.send"]
    assert page.evaluate("window.__i18nMissing") == [] and not errors, errors
    page.context.close()

    # serve --lang zh: Chinese for a browser that has not chosen, whatever its own language
    with running(create_app(Monitor(default_model), lang="zh")) as url:
        page, errors = new_page(browser, url, locale="en-US")
        assert page.input_value("#lang") == "zh" and page.inner_text("#send") == T["zh"]["chat.send"]
        assert T["zh"]["info.no_atlas"] in page.inner_text("#model-info")
        assert english_left(page) == [] and not errors, errors
        page.context.close()


def test_chat_streams_and_keeps_the_conversation(browser, served: str) -> None:
    page, errors = new_page(browser, served)
    page.set_checked("#chat-mode", True)
    page.fill("#max-new", "24")
    page.fill("#chat-input", "Tell me a story about a dragon.")
    page.click("#send")
    # while it streams: tokens already shown, the button offers Stop
    page.wait_for_function("document.querySelectorAll('#conversation .tok.generated').length >= 2 && "
                           "document.querySelector('#send').textContent === 'Stop'", timeout=120_000)
    page.wait_for_function("document.querySelector('#send').textContent === 'Send'", timeout=120_000)
    first_turn = page.locator("#conversation .tok").count()
    send(page, "And then?", chat=True, max_new=4)
    text = page.locator("#conversation").inner_text()
    assert "dragon" in text and "And then?" in text and page.locator("#conversation .tok").count() > first_turn
    assert text.count("<|im_start|>assistant") == 2
    # stop a generation half-way: the server is free again right after
    page.fill("#max-new", "24")
    page.fill("#chat-input", "Count to fifty.")
    page.click("#send")
    page.wait_for_function("document.querySelector('#send').textContent === 'Stop'")
    page.click("#send")
    page.wait_for_function("document.querySelector('#send').textContent === 'Send'")
    send(page, "Hi", chat=False, max_new=2)
    assert not errors, errors


@pytest.fixture(scope="module")
def hostile_atlas(tmp_path_factory: pytest.TempPathFactory, default_model: neurodbg.Model) -> Path:
    """A real atlas of layer 0 over a corpus full of markup, with a few neurons described."""
    from neurodbg.atlas import AtlasStore
    from neurodbg.corpus import open_corpus
    from neurodbg.describe.exemplars import ExemplarReader
    from neurodbg.describe.explainers import make
    from neurodbg.describe.runner import background, describe
    from neurodbg.scan import ScanSettings, scan

    root = tmp_path_factory.mktemp("hostile")
    corpus = root / "hostile.txt"
    words = ["apple", "river", "engine", "violin", "harbor", "lantern", "meadow", "copper"]
    corpus.write_text("\n\n".join(f"Entry {i}: the {words[i % 8]} said {HOSTILE[i % 3]} and then "
                                  f"{HOSTILE[(i + 1) % 3]} near the {words[(i * 3) % 8]} number {i * 7}."
                                  for i in range(300)))
    directory = root / "atlas"
    scan(default_model, open_corpus(corpus), directory, ScanSettings(sites=("layers.0.mlp.act",)), progress=False)
    store = AtlasStore.open(directory)
    reader = ExemplarReader(store)
    explainer, simulator = make("stat", background(store, default_model.tokenizer, reader))
    describe(store, explainer, simulator, reader=reader, neurons=range(12), progress=False)
    store.close()
    return directory


def test_hostile_text_is_shown_not_run(browser, default_model: neurodbg.Model, hostile_atlas: Path,
                                       shots: Path) -> None:
    from serving import running

    from neurodbg.analyze.monitor import Monitor
    from neurodbg.serve import Limits, create_app

    app = create_app(Monitor(default_model, hostile_atlas), limits=Limits(max_new_tokens=8))
    with running(app) as url:
        page, errors = new_page(browser, url)
        send(page, "Repeat exactly: " + " ".join(HOSTILE), chat=True, max_new=8)
        conversation = page.locator("#conversation").inner_text()
        assert "<script>" in conversation and 'onerror="window.__xss' in conversation
        page.locator("#conversation .tok", has_text="script").first.hover()
        page.locator("#conversation .tok.generated").first.click()
        page.wait_for_selector("#analysis table", state="attached")
        wait_idle(page)

        page.click('.tabs button[data-tab="neuron"]')
        page.fill("#neuron-id", "L0/N3")
        page.click("#neuron-form button")
        page.wait_for_selector("#neuron-page .exemplar")
        wait_idle(page)
        exemplars = page.locator("#neuron-page").inner_text()
        assert "<script>" in exemplars or "onerror" in exemplars or "<b" in exemplars
        page.screenshot(path=str(shots / "hostile.png"))

        page.fill("#search-input", "script tags and markup")
        page.click("#search-form button")
        page.wait_for_selector("#search-results table a.nid", timeout=180_000)
        wait_idle(page)
        page.click('.tabs button[data-tab="lens"]')
        page.wait_for_selector("#lens table.lens td")

        # nothing ran, nothing was injected
        assert page.evaluate("window.__xss") is None
        assert page.locator("img").count() == 0 and page.locator("b").count() == 0
        assert page.locator("script").count() == 1
        assert not errors, errors
        info = json.loads(page.evaluate("JSON.stringify(window.__xss ?? null)"))
        assert info is None


def test_tuned_lens_sampling_consistency_and_embedding_maps(browser, served: str, shots: Path) -> None:
    page, errors = new_page(browser, served)
    # sampled chat: the controls appear with the switch and the reply comes through them
    assert page.locator("#sample-opts").is_hidden()
    page.set_checked("#sample-on", True)
    page.fill("#sample-seed", "7")
    send(page, "Once upon a time", chat=False, max_new=6)
    assert page.locator("#conversation .tok.generated").count() >= 1
    # the lens view's tuned switch (the server has a tuned lens)
    page.click('.tabs button[data-tab="lens"]')
    wait_idle(page)
    assert "logit lens" in page.locator("#lens-kind").inner_text()
    page.set_checked("#lens-tuned", True)
    page.wait_for_function("document.querySelector('#lens-kind').textContent.startsWith('tuned lens')")
    wait_idle(page)
    assert page.locator("#lens table.lens tr").count() == 31
    # self-consistency: the vote, every sample, where they fork
    page.click('.tabs button[data-tab="consistency"]')
    page.fill("#cons-question", "What is 345 * 678? Answer with the number.")
    page.fill("#cons-samples", "4")
    page.fill("#cons-max", "10")
    page.click("#cons-run")
    page.wait_for_selector("#consistency h3")
    wait_idle(page)
    assert page.locator("#consistency ol.samples li").count() == 4
    assert page.locator("#consistency table.votes tr").count() >= 2
    page.fill("#cons-samples", "9")                        # over this server's limit of 8: one line, no crash
    page.click("#cons-run")
    page.wait_for_function("!document.querySelector('#error').hidden")
    assert "over this server's limit of 8" in page.locator("#error").inner_text()
    # an embedding map of the seeds' words, Chinese included, as SVG text
    page.click('.tabs button[data-tab="embeddings"]')
    page.click("#embed-form button[type=submit]")
    page.wait_for_selector("#embeddings svg circle")
    assert page.locator("#embeddings svg circle").count() == 6
    labels = page.locator("#embeddings svg text.point-label").all_text_contents()
    assert "医生" in labels and "Chat" in labels
    assert page.locator("#embeddings table.neighbours tr").count() == 7
    page.screenshot(path=str(shots / "embeddings.png"))
    assert_translated(page)                  # the lens, consistency and embedding views, drawn again in Chinese
    assert not errors, errors


def test_several_steering_specs_run_together(browser, served: str) -> None:
    page, errors = new_page(browser, served)
    send(page, CASE, chat=False, max_new=2)
    page.click('.tabs button[data-tab="steer"]')
    page.select_option("#steer-recipe", "boost")               # the seeds' recipe fills the form
    assert (page.input_value("#steer-value"), page.input_value("#steer-level"),
            page.input_value("#steer-tokens"), page.input_value("#steer-sides")) == ("0.5", "0.00001", "prompt",
                                                                                    "selected")
    page.select_option("#steer-level", "0.0001")               # this small atlas has no 1e-5 tail
    page.fill("#steer-neurons", "L1/N7+")
    page.click("#steer-add")
    assert page.locator("#steer-specs li").count() == 1 and page.input_value("#steer-neurons") == ""
    page.fill("#steer-neurons", "L0/N3+, L1/N42+")
    page.fill("#steer-value", "0")
    page.fill("#steer-max", "3")
    page.click("#steer-preview")
    page.wait_for_selector("#steer-preview-list table")
    wait_idle(page)
    specs = page.locator("#steer-preview-list tr td:first-child").all_inner_texts()
    assert specs == ["1", "2", "2"]
    page.click("#steer-apply")
    page.wait_for_selector("#steer-result .compare")
    wait_idle(page)
    assert "3 neurons steered, 0.007% of all" in page.locator("#steer-result").inner_text()
    # a contradiction is one line, not a crash
    page.fill("#steer-neurons", "L1/N7+")
    page.fill("#steer-value", "2")
    page.click("#steer-apply")
    page.wait_for_function("!document.querySelector('#error').hidden")
    assert "contradict" in page.locator("#error").inner_text()
    assert not errors, errors
