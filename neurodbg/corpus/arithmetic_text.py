"""Worked arithmetic written out: the `numbers-arithmetic` source of the default corpus.

Real text rarely spells out sums, compares 9.11 with 9.9 or says why version 3.11
is newer than 3.9, yet those are the contexts people ask a model about. This
source writes them: worksheets, question-and-answer drills and short worked
problems on whole numbers, decimals, comparisons and rounding, version numbers,
money, percentages and fractions, and units. Every number comes from a
`random.Random` seeded per document (string seeds hash the same on every Python),
every result from `decimal` or `fractions`, so each build writes the same text
and every statement in it is true (tests re-check each one independently)."""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from neurodbg.corpus.number_words import number_words

NAMES = ("Maria", "James", "Aisha", "Wei", "Tom", "Priya", "Lucas", "Fatima", "Hiro", "Emma", "Omar", "Sofia",
         "Daniel", "Mei", "Noah", "Zara", "Ivan", "Grace", "Mateo", "Chloe")
ITEMS = ("notebooks", "apples", "bus tickets", "coffees", "pencils", "loaves of bread", "books", "sandwiches",
         "bottles of water", "cinema tickets", "t-shirts", "kilograms of rice")
CURRENCIES = ("$", "£", "€")
PROJECTS = ("libcompress", "parsekit", "skyplot", "tinydb", "netfetch", "quickhash", "mathcore", "docbuild")
CHANGES = ("Fixed a crash when the input file is empty.", "Added support for streaming reads.",
           "Improved performance of the parser.", "Dropped support for old configuration files.",
           "Documented the command-line options.", "Fixed a memory leak in the cache.",
           "Added a progress bar to long operations.", "Updated the bundled certificates.")
# (name, plural, other unit, other plural, factor): 1 name = factor other units
UNITS = (("kilometre", "kilometres", "metre", "metres", 1000), ("metre", "metres", "centimetre", "centimetres", 100),
         ("kilogram", "kilograms", "gram", "grams", 1000), ("litre", "litres", "millilitre", "millilitres", 1000),
         ("hour", "hours", "minute", "minutes", 60), ("minute", "minutes", "second", "seconds", 60),
         ("day", "days", "hour", "hours", 24), ("week", "weeks", "day", "days", 7))
SYMBOLS = {"unicode": {"+": "+", "-": "−", "*": "×", "/": "÷"}, "ascii": {"+": "+", "-": "-", "*": "*", "/": "/"}}
WORDS = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}


def fmt(d: Decimal | int, *, commas: bool = True) -> str:
    """A number as people write it: no exponent, no trailing zeros, thousands separated."""
    value = Decimal(d).normalize()
    return format(value, ",f" if commas else "f")


def money(d: Decimal) -> str:
    return format(d.quantize(Decimal("0.01")), ",f")


def _decimal(rng: random.Random, whole: int, places: int) -> Decimal:
    return Decimal(rng.randint(0, whole)) + Decimal(rng.randint(1, 10**places - 1)) / 10**places


def _operation(rng: random.Random, op: str, decimals: bool) -> tuple[Decimal, Decimal, Decimal]:
    if decimals:
        a, b = _decimal(rng, 99, rng.randint(1, 3)), _decimal(rng, 20, rng.randint(1, 2))
    else:
        a, b = Decimal(rng.randint(2, 9999)), Decimal(rng.randint(2, 999))
    if op == "+":
        return a, b, a + b
    if op == "-":
        a, b = max(a, b), min(a, b)
        return a, b, a - b
    if op == "*":
        if not decimals:
            a, b = Decimal(rng.randint(2, 99)), Decimal(rng.randint(2, 99))
        return a, b, a * b
    quotient, divisor = Decimal(rng.randint(2, 99)), Decimal(rng.randint(2, 12))
    return quotient * divisor, divisor, quotient


def _equations(rng: random.Random, decimals: bool) -> list[str]:
    style = rng.choice(("unicode", "ascii"))
    layout = rng.choice(("worksheet", "qa", "words"))
    ops = ("+", "-", "*") if decimals else ("+", "-", "*", "/")
    lines = []
    for i in range(rng.randint(8, 14)):
        op = rng.choice(ops)
        a, b, c = _operation(rng, op, decimals)
        sym = SYMBOLS[style][op]
        if layout == "worksheet":
            lines.append(f"{i + 1}. {fmt(a)} {sym} {fmt(b)} = {fmt(c)}")
        elif layout == "qa":
            lines.append(f"Q: What is {fmt(a)} {WORDS[op]} {fmt(b)}?\nA: {fmt(a)} {sym} {fmt(b)} = {fmt(c)}")
        elif decimals or c >= 10**6:
            lines.append(f"{fmt(a)} {WORDS[op]} {fmt(b)} makes {fmt(c)}, that is {fmt(a)} {sym} {fmt(b)} = {fmt(c)}.")
        else:
            lines.append(f"{number_words(int(a)).capitalize()} {WORDS[op]} {number_words(int(b))} is "
                         f"{number_words(int(c))}: {fmt(a)} {sym} {fmt(b)} = {fmt(c)}.")
    if not decimals and rng.random() < 0.5:
        n, d = rng.randint(20, 500), rng.randint(3, 12)
        q, r = divmod(n, d)
        if r:
            lines.append(f"{len(lines) + 1}. {n} {SYMBOLS[style]['/']} {d} = {q} remainder {r}, because "
                         f"{q} {SYMBOLS[style]['*']} {d} + {r} = {n}")
    title = rng.choice(("Worksheet", "Practice", "Homework", "Mental arithmetic", "Exercises"))
    topic = "decimals" if decimals else rng.choice(("whole numbers", "the four operations", "column arithmetic"))
    joiner = "\n\n" if layout == "qa" else "\n"
    return [f"{title} {rng.randint(1, 40)}: {topic}", joiner.join(lines)]


def _tricky_pair(rng: random.Random) -> tuple[Decimal, Decimal]:
    """Two decimals with the same whole part and different numbers of places (9.11 and 9.9)."""
    whole = rng.randint(0, 20)
    short = Decimal(whole) + Decimal(rng.randint(1, 9)) / 10
    digits = 3 if rng.random() < 0.3 else 2
    fraction = rng.choice([k for k in range(10 ** (digits - 1), 10**digits) if k % 10])  # really `digits` places
    long = Decimal(whole) + Decimal(fraction) / 10**digits
    return (short, long) if rng.random() < 0.5 else (long, short)


def _compare(rng: random.Random) -> list[str]:
    paras = []
    for _ in range(rng.randint(5, 9)):
        x, y = _tricky_pair(rng)
        if x == y:
            continue
        big, small = max(x, y), min(x, y)
        places = max(-x.as_tuple().exponent, -y.as_tuple().exponent)  # type: ignore[operator]
        unit = {2: "hundredths", 3: "thousandths"}.get(places, "tenths")
        padded = [format(v.quantize(Decimal(1).scaleb(-places)), "f") for v in (x, y)]
        kind = rng.choice(("which", "is", "order", "round"))
        if kind == "which":
            paras.append(f"Q: Which number is bigger, {fmt(x)} or {fmt(y)}?\nA: {fmt(big)} is bigger. Write both "
                         f"with {places} decimal places: {padded[0]} and {padded[1]}. Both have the same whole "
                         f"part, and {padded[0].split('.')[1]} {unit} against {padded[1].split('.')[1]} {unit} "
                         f"decides it, so {fmt(big)} > {fmt(small)}.")
        elif kind == "is":
            answer = "Yes" if x > y else "No"
            sign = ">" if x > y else "<"
            paras.append(f"Is {fmt(x)} greater than {fmt(y)}? {answer}: {fmt(x)} {sign} {fmt(y)}. The number "
                         "of digits after the point does not decide it; compare the digits place by place.")
        elif kind == "order":
            values = sorted({x, y, _decimal(rng, int(small) + 1, rng.randint(1, 3))}, key=lambda v: rng.random())
            ordered = sorted(values)
            paras.append(f"Put in order from smallest to largest: {', '.join(fmt(v) for v in values)}.\n"
                         f"Answer: {', '.join(fmt(v) for v in ordered)}, since "
                         f"{' < '.join(fmt(v) for v in ordered)}.")
        else:
            value = _decimal(rng, 50, 4)
            digits = rng.randint(1, 3)
            step = Decimal(1).scaleb(-digits)
            rounded = value.quantize(step, rounding=ROUND_HALF_UP)
            if (value - rounded).copy_abs() * 2 == step:
                continue  # a tie reads ambiguously without naming the rule
            paras.append(f"{fmt(value)} rounded to {digits} decimal place{'s' if digits > 1 else ''} is "
                         f"{format(rounded, 'f')}.")
    return [rng.choice(("Comparing decimals", "Which is bigger?", "Decimals: order and rounding",
                        "Place value practice")), "\n\n".join(paras)]


def _versions(rng: random.Random) -> list[str]:
    project = rng.choice(PROJECTS)
    major = rng.randint(1, 6)
    minors = sorted(rng.sample(range(3, 15), rng.randint(4, 7)), reverse=True)
    year = rng.randint(2008, 2024)
    notes = []
    for minor in minors:
        patch = rng.randint(0, 3)
        month, day = rng.randint(1, 12), rng.randint(1, 28)
        notes.append(f"## {project} {major}.{minor}.{patch} ({year}-{month:02d}-{day:02d})\n\n- "
                     + "\n- ".join(rng.sample(CHANGES, rng.randint(1, 3))))
        year -= rng.randint(0, 1)
    new, old = minors[0], minors[-1]
    explain = (f"Version {major}.{new} is newer than version {major}.{old}: version numbers are compared part by "
               f"part, and {new} is greater than {old}. Read as decimal numbers they compare the other way, "
               f"{major}.{new} {'<' if Decimal(f'{major}.{new}') < Decimal(f'{major}.{old}') else '>'} "
               f"{major}.{old}, which is why versions are not decimals.")
    return [f"{project} release notes", "\n\n".join(notes), explain]


def _money(rng: random.Random) -> list[str]:
    cur = rng.choice(CURRENCIES)
    paras = []
    for _ in range(rng.randint(3, 6)):
        name = rng.choice(NAMES)
        plural = rng.choice(ITEMS)
        n = rng.randint(2, 9)
        price = Decimal(rng.randint(25, 1999)) / 100
        total = price * n
        bill = next(b for b in (Decimal(5), Decimal(10), Decimal(20), Decimal(50), Decimal(100), Decimal(200))
                    if b > total)
        paras.append(f"{name} buys {n} {plural} at {cur}{money(price)} each and pays with a {cur}{fmt(bill)} note. "
                     f"The {plural} cost {n} × {cur}{money(price)} = {cur}{money(total)}, so the change is "
                     f"{cur}{money(bill)} − {cur}{money(total)} = {cur}{money(bill - total)}.")
    return [rng.choice(("Money problems", "Shopping sums", "Word problems: change")), "\n\n".join(paras)]


def _percent_fraction(rng: random.Random) -> list[str]:
    lines = []
    for _ in range(rng.randint(6, 10)):
        kind = rng.choice(("percent", "fraction", "sum"))
        if kind == "percent":
            p, n = rng.choice((5, 10, 12.5, 15, 20, 25, 30, 40, 50, 75)), rng.randint(2, 80) * 8
            result = Decimal(str(p)) * n / 100
            lines.append(f"{fmt(Decimal(str(p)))}% of {fmt(n)} is {fmt(result)}.")
        elif kind == "fraction":
            den = rng.choice((2, 4, 5, 8, 10, 16, 20, 25))
            num = rng.randint(1, den - 1)
            lines.append(f"{num}/{den} = {fmt(Decimal(num) / den)}")
        else:
            a, b = Fraction(rng.randint(1, 5), rng.randint(2, 9)), Fraction(rng.randint(1, 5), rng.randint(2, 9))
            s = a + b
            lines.append(f"{a.numerator}/{a.denominator} + {b.numerator}/{b.denominator} = "
                         f"{s.numerator}/{s.denominator}")
    return [rng.choice(("Percentages and fractions", "Fractions, decimals and percentages")), "\n".join(lines)]


def _units(rng: random.Random) -> list[str]:
    lines = []
    for _ in range(rng.randint(6, 10)):
        name, plural, other, others, factor = rng.choice(UNITS)
        amount = Decimal(rng.randint(1, 40)) / rng.choice((1, 2, 4))
        converted = amount * factor
        lines.append(f"{fmt(amount)} {name if amount == 1 else plural} = {fmt(converted)} "
                     f"{other if converted == 1 else others}")
    if rng.random() < 0.5:
        celsius = rng.randrange(-20, 45, 5)
        lines.append(f"{celsius} °C = {fmt(Decimal(celsius) * 9 / 5 + 32)} °F")
    return [rng.choice(("Units and measures", "Converting units")), "\n".join(lines)]


TOPICS: tuple[Callable[[random.Random], list[str]], ...] = (
    lambda rng: _equations(rng, decimals=False), lambda rng: _equations(rng, decimals=True),
    _compare, _compare, _versions, _money, _percent_fraction, _units)


def arithmetic_documents(count: int, seed: int) -> list[tuple[str, str]]:
    """(id, text) of `count` documents; document i depends only on (seed, i)."""
    docs = []
    for i in range(count):
        rng = random.Random(f"neurodbg-arithmetic:{seed}:{i}")
        parts = rng.choice(TOPICS)(rng)
        docs.append((f"arithmetic-{i:04d}", "\n\n".join(parts)))
    return docs
