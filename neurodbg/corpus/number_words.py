"""Whole numbers in English words ("1,047" -> "one thousand and forty-seven" in
British style, "one thousand forty-seven" in American style), for the corpus's
generated arithmetic."""

from __future__ import annotations

ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand"))


def _below_hundred(n: int) -> str:
    if n < 20:
        return ONES[n]
    tens, ones = divmod(n, 10)
    return TENS[tens] + (f"-{ONES[ones]}" if ones else "")


def _below_thousand(n: int, british: bool) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _below_hundred(rest)
    head = f"{ONES[hundreds]} hundred"
    if not rest:
        return head
    return f"{head} {'and ' if british else ''}{_below_hundred(rest)}"


def number_words(n: int, *, british: bool = False) -> str:
    """`n` (|n| < 10**12) in words; negative numbers start with "minus"."""
    if n < 0:
        return "minus " + number_words(-n, british=british)
    if n >= 10**12:
        raise ValueError(f"{n} is too large to write in words here")
    if n < 1000:
        return _below_thousand(n, british)
    parts = []
    for size, name in SCALES:
        count, n = divmod(n, size)
        if count:
            parts.append(f"{_below_thousand(count, british)} {name}")
    if n:
        # "one thousand and five" (British) but "one thousand two hundred" either way
        joiner = "and " if british and n < 100 else ""
        parts.append(joiner + _below_thousand(n, british))
    return " ".join(parts)
