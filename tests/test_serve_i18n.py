"""The web app in English and Chinese: one dictionary (static/i18n.json) with the same keys in both
languages, every key the page uses present and every key used; `?lang=` and `serve --lang` refuse a
language without a dictionary. (The browser walk in both languages is in test_serve_browser.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

import neurodbg
from neurodbg.errors import UILanguageError
from neurodbg.serve.languages import UI_LANGUAGES, ui_language

STATIC = Path(neurodbg.__file__).parent / "serve" / "static"
DICTIONARY = json.loads((STATIC / "i18n.json").read_text(encoding="utf-8"))
APP_JS = (STATIC / "app.js").read_text(encoding="utf-8")
INDEX = (STATIC / "index.html").read_text(encoding="utf-8")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
SAME_IN_BOTH: set[str] = set()        # keys whose text may read the same in both languages (symbols, names)
# text the page shows as it is in every language: notation, names, examples of model input
UNTRANSLATED_HTML = {"neurodbg", "top-k", "top-p", "k", "λ", "English", "中文", "L5/N123", "L3/N12+, L7/N99-"}


def used_in_js() -> tuple[set[str], set[str]]:
    """(keys called by name: t("…"), tn("…"), uiError("…"), "data-i18n": "…"; every quoted string
    shaped like a key of one of the dictionary's namespaces)."""
    called = set(re.findall(r'\b(?:t|tn|uiError)\("([^"]+)"', APP_JS))
    called |= set(re.findall(r'"data-i18n(?:-placeholder|-title)?": "([^"]+)"', APP_JS))
    namespaces = {key.split(".")[0] for key in DICTIONARY["en"]}
    quoted = {s for s in re.findall(r'"([a-z_]+(?:\.[a-z0-9_]+)+)"', APP_JS) if s.split(".")[0] in namespaces}
    return called, quoted


def used_in_html() -> set[str]:
    return set(re.findall(r'data-i18n(?:-placeholder|-title)?="([^"]+)"', INDEX))


def test_both_languages_have_every_key_with_the_same_placeholders() -> None:
    assert set(DICTIONARY) == set(UI_LANGUAGES)
    en, zh = DICTIONARY["en"], DICTIONARY["zh"]
    assert set(en) == set(zh), sorted(set(en) ^ set(zh))
    for key in en:
        assert isinstance(en[key], str) and en[key].strip(), key
        assert isinstance(zh[key], str) and zh[key].strip(), key
        assert set(PLACEHOLDER.findall(en[key])) == set(PLACEHOLDER.findall(zh[key])), key
    same = {key for key in en if en[key] == zh[key]}
    assert same <= SAME_IN_BOTH, sorted(same - SAME_IN_BOTH)
    # Chinese text is Chinese: every zh value has a CJK character or CJK punctuation
    assert not [key for key in zh if not re.search(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]", zh[key])]


def test_every_key_the_page_uses_exists_and_every_key_is_used() -> None:
    called, quoted = used_in_js()
    from_html = used_in_html()
    keys = set(DICTIONARY["en"])
    assert called | quoted | from_html <= keys, sorted((called | quoted | from_html) - keys)
    assert keys <= quoted | from_html, sorted(keys - quoted - from_html)


class _Texts(HTMLParser):
    """index.html's text and placeholder/title attributes that no data-i18n* attribute covers."""

    RAW = frozenset({"script", "style", "textarea", "title"})
    VOID = frozenset({"input", "meta", "link", "br", "img"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool]] = []        # (tag, covered: data-i18n or translate="no")
        self.loose: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        given = dict(attrs)
        for name in ("placeholder", "title"):
            if given.get(name) and f"data-i18n-{name}" not in given and given[name] not in UNTRANSLATED_HTML:
                self.loose.append(f"<{tag}> {name}={given[name]!r}")
        if tag in self.VOID:
            return
        inherited = bool(self.stack) and self.stack[-1][1]
        covered = inherited or "data-i18n" in given or given.get("translate") == "no" or tag in self.RAW
        self.stack.append((tag, covered))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if not text or (self.stack and self.stack[-1][1]) or text in UNTRANSLATED_HTML:
            return
        if re.search(r"[A-Za-z]{2,}", text) and not re.fullmatch(r"[\d.\s]+|[+-]", text):
            self.loose.append(text)


def test_the_page_has_no_string_outside_the_dictionary() -> None:
    parser = _Texts()
    parser.feed(INDEX)
    assert parser.loose == []


def test_the_dictionary_is_what_the_page_loads() -> None:
    # before the first render, from /static (the CSP allows nothing else)
    assert 'fetch("/static/i18n.json")' in APP_JS
    assert "window.__i18nMissing" in APP_JS and 'id="lang"' in INDEX


def test_an_unknown_language_is_refused() -> None:
    assert ui_language("zh") == "zh" and ui_language("auto", auto=True) == "auto"
    with pytest.raises(UILanguageError, match=r"^unknown UI language 'fr'; choose en or zh$"):
        ui_language("fr")
    with pytest.raises(UILanguageError, match=r"choose auto, en or zh$"):
        ui_language("ZH", auto=True)
    with pytest.raises(UILanguageError):
        ui_language("auto")


def test_the_page_and_the_info_name_the_language(default_model: neurodbg.Model) -> None:
    from serving import running

    from neurodbg.analyze.monitor import Monitor
    from neurodbg.serve import create_app

    with pytest.raises(UILanguageError, match="unknown UI language 'fr'"):
        create_app(Monitor(default_model), lang="fr")
    with running(create_app(Monitor(default_model), lang="zh")) as url:
        assert httpx.get(f"{url}/api/info").json()["lang"] == "zh"
        for query in ("", "?lang=en", "?lang=zh"):
            page = httpx.get(f"{url}/{query}")
            assert page.status_code == 200 and 'id="lang"' in page.text, query
        refused = httpx.get(f"{url}/?lang=fr")
        assert refused.status_code == 400
        assert refused.json() == {"detail": "unknown UI language 'fr'; choose en or zh"}
        assert httpx.get(f"{url}/static/i18n.json").json() == DICTIONARY
    with running(create_app(Monitor(default_model))) as url:
        assert httpx.get(f"{url}/api/info").json()["lang"] == "auto"


def test_cli_serve_refuses_an_unknown_language() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NEURODBG_TOKEN": ""}
    r = subprocess.run([sys.executable, "-m", "neurodbg.cli.main", "serve", "--lang", "fr"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == ["error: unknown UI language 'fr'; choose auto, en or zh"]
