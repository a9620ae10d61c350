"""Token classes and text topics the statistical explainer can name.

A class is a property of one token's text (digits, punctuation, ...); a topic is
a property of a whole excerpt, recognised by marker words (archaic Bible English,
Python code, arithmetic, calendar dates, ...). Both are only named when they are clearly over-represented
among a neuron's strongest tokens or excerpts compared with the corpus."""

from __future__ import annotations

import re
from collections.abc import Callable

TOKEN_CLASSES: dict[str, Callable[[str], bool]] = {
    "digits and numbers": lambda s: bool(re.fullmatch(r"\s*\d+", s)),
    "punctuation": lambda s: bool(re.fullmatch(r"\s*[^\w\s]+\s*", s)),
    "line breaks and indentation": lambda s: s != "" and s.strip() == "" and ("\n" in s or len(s) > 1),
    "capitalised words and names": lambda s: bool(re.fullmatch(r"\s?[A-Z][a-z]+", s)),
    "upper-case words": lambda s: bool(re.fullmatch(r"\s?[A-Z]{2,}", s)),
    "word pieces inside a word": lambda s: bool(re.fullmatch(r"[a-z]+", s)),
    "underscored code identifiers": lambda s: "_" in s.strip() and len(s.strip()) > 1,
}

TOPICS: dict[str, frozenset[str]] = {
    "Bible verses and archaic English (thee, thou, hath, LORD)": frozenset({
        "thee", "thou", "thy", "thine", "hath", "doth", "saith", "unto", "shalt", "ye", "LORD", "lord", "begat",
        "spake"}),
    "Python code and programming documentation": frozenset({
        "def", "return", "import", "self", "None", "True", "False", "class", "lambda", "str", "int", "bool",
        "dict", "list", "args", "kwargs"}),
    "numbers, dates and counting": frozenset({
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "hundred", "thousand",
        "year", "years", "day", "days"}),
    # the default corpus's newer sources; "=" and "+" are left out, Python code is full of them
    "arithmetic and decimals": frozenset({
        "×", "÷", "−", "plus", "minus", "divided", "equals", "decimal", "decimals", "bigger", "rounded",
        "remainder", "percent", "%"}),
    "calendar dates and weekdays": frozenset({
        "January", "February", "March", "April", "June", "July", "August", "September", "October", "November",
        "December", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "leap"}),
    "American politics and government": frozenset({
        "Congress", "America", "American", "Americans", "nation", "economy", "budget", "tax", "taxes",
        "federal", "Federal", "President", "jobs", "Government"}),
    "the sea, ships and whaling": frozenset({
        "whale", "whales", "whaling", "ship", "ships", "sea", "Ahab", "boat", "boats", "harpoon", "deck",
        "Pequod", "sperm", "captain", "Captain"}),
}


def token_class(text: str) -> str | None:
    for name, test in TOKEN_CLASSES.items():
        if test(text):
            return name
    return None


def excerpt_topics(words: set[str]) -> set[str]:
    """Topics with at least two of their marker words among `words`."""
    return {name for name, markers in TOPICS.items() if len(words & markers) >= 2}
