"""The web app's languages. Its dictionary, `static/i18n.json`, holds one table per language with
the same keys; the page picks one (`?lang=`, the browser's remembered choice, `serve --lang`, the
browser's language). CLI messages and the API's error details stay English."""

from __future__ import annotations

from neurodbg.errors import UILanguageError

UI_LANGUAGES = ("en", "zh")
AUTO = "auto"          # `serve --lang auto`: the browser decides


def ui_language(value: str, *, auto: bool = False) -> str:
    """`value` when it names a UI language (or "auto" where `auto`); else one clear line."""
    choices = ((AUTO,) if auto else ()) + UI_LANGUAGES
    if value not in choices:
        shown = value if len(value) <= 20 else value[:20] + "…"
        spelled = ", ".join(choices[:-1]) + " or " + choices[-1]
        raise UILanguageError(f"unknown UI language {shown!r}; choose {spelled}")
    return value
