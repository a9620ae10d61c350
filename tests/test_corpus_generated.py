"""The default corpus's generated sources say only true things, and its registry
sources arrive checked: every equation, comparison, rounding, conversion, weekday,
interval and holiday in the `arithmetic` and `calendar` sources is re-derived here
by other means (Decimal and Fraction parsing of the text, Zeller's congruence,
day ordinals, dateutil's Easter); the npm fetcher is driven against a real HTTP
server on loopback."""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import io
import re
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from dateutil.easter import easter as dateutil_easter

from neurodbg.corpus.arithmetic_text import arithmetic_documents
from neurodbg.corpus.calendar_text import calendar_documents
from neurodbg.corpus.number_words import number_words
from neurodbg.errors import CorpusError
from neurodbg.npm_registry import fetch_npm_tarball, integrity_of, tarball_members

NUM = r"-?\d[\d,]*(?:\.\d+)?"
MONEY = rf"[$£€]?({NUM})"
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DATE = rf"({'|'.join(DAYS)}), (\d{{1,2}}) ({'|'.join(MONTHS)}) (\d{{4}})"


def d(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def zeller(year: int, month: int, day: int) -> int:
    """Weekday (0 = Monday) by Zeller's congruence, independent of datetime."""
    if month < 3:
        month += 12
        year -= 1
    k, j = year % 100, year // 100
    h = (day + 13 * (month + 1) // 5 + k + k // 4 + j // 4 + 5 * j) % 7  # 0 = Saturday
    return (h + 5) % 7


@functools.cache
def arithmetic() -> list[tuple[str, str]]:
    return arithmetic_documents(800, 0)


@functools.cache
def calendar_pages() -> list[tuple[str, str]]:
    return calendar_documents(300, 0)


def apply(a: Decimal, op: str, b: Decimal) -> Decimal:
    if op == "+":
        return a + b
    if op in "-−":
        return a - b
    if op in "×*":
        return a * b
    assert op in "÷/"
    return a / b


def test_number_words_spell_known_numbers() -> None:
    assert number_words(0) == "zero" and number_words(13) == "thirteen" and number_words(40) == "forty"
    assert number_words(347) == "three hundred forty-seven"
    assert number_words(347, british=True) == "three hundred and forty-seven"
    assert number_words(1047, british=True) == "one thousand and forty-seven"
    assert number_words(1_200_005) == "one million two hundred thousand five"
    assert number_words(-21) == "minus twenty-one"
    with pytest.raises(ValueError):
        number_words(10**12)


def test_arithmetic_statements_are_true() -> None:
    checked: Counter[str] = Counter()
    for _, text in arithmetic():
        for a, op, b, c in re.findall(rf"(?<![\d.,$£€])(?<![×*÷/+\-−] ){MONEY} ([+\-−×*÷/]) {MONEY} = {MONEY}"
                                      r"(?![\d/]| remainder)", text):
            assert apply(d(a), op, d(b)) == d(c), f"{a} {op} {b} = {c}"
            checked["equation"] += 1
        for n, divisor, q, r in re.findall(r"(\d+) [÷/] (\d+) = (\d+) remainder (\d+)", text):
            assert divmod(int(n), int(divisor)) == (int(q), int(r))
            checked["remainder"] += 1
        for q, x, r, n in re.findall(r"(\d+) [×*] (\d+) \+ (\d+) = (\d+)", text):
            assert int(q) * int(x) + int(r) == int(n)
            checked["remainder"] += 1
        for chain in re.findall(rf"{NUM}(?: [<>] {NUM})+", text):
            parts = chain.split()
            for left, sign, right in zip(parts[::2], parts[1::2], parts[2::2], strict=False):
                assert (d(left) < d(right)) if sign == "<" else (d(left) > d(right)), chain
            checked["comparison"] += 1
        for x, y, z in re.findall(rf"Which number is bigger, ({NUM}) or ({NUM})\?\nA: ({NUM}) is bigger", text):
            assert d(z) == max(d(x), d(y))
            checked["which"] += 1
        for x, y, answer, sign in re.findall(rf"Is ({NUM}) greater than ({NUM})\? (Yes|No): {NUM} ([<>])", text):
            assert (answer == "Yes") == (d(x) > d(y)) == (sign == ">")
            checked["is greater"] += 1
        for given, answer in re.findall(r"order from smallest to largest: ([\d., ]+)\.\nAnswer: ([\d., ]+), since",
                                        text):
            assert [d(v) for v in answer.split(", ")] == sorted(d(v) for v in given.split(", "))
            checked["order"] += 1
        for value, places, rounded in re.findall(rf"({NUM}) rounded to (\d) decimal places? is ({NUM})", text):
            exact = d(value).quantize(Decimal(1).scaleb(-int(places)), rounding=ROUND_HALF_UP)
            assert exact == d(rounded) and len(rounded.split(".")[1]) == int(places)
            checked["rounding"] += 1
        for p, n, r in re.findall(rf"({NUM})% of ({NUM}) is ({NUM})", text):
            assert d(p) * d(n) / 100 == d(r)
            checked["percent"] += 1
        for num, den, dec in re.findall(rf"(?<![\d/])(\d+)/(\d+) = ({NUM})(?![\d/])", text):
            assert Fraction(int(num), int(den)) == Fraction(d(dec))
            checked["fraction"] += 1
        for a, b, c, e, f, g in re.findall(r"(\d+)/(\d+) \+ (\d+)/(\d+) = (\d+)/(\d+)", text):
            total = Fraction(int(a), int(b)) + Fraction(int(c), int(e))
            assert (total.numerator, total.denominator) == (int(f), int(g))
            checked["fraction sum"] += 1
        for new, old in re.findall(r"Version \d+\.(\d+) is newer than version \d+\.(\d+)", text):
            assert int(new) > int(old)
            checked["version"] += 1
        checked["units"] += check_units(text)
    assert min(checked.values()) >= 30, checked


UNIT_FACTORS = {("kilometre", "metre"): 1000, ("metre", "centimetre"): 100, ("kilogram", "gram"): 1000,
                ("litre", "millilitre"): 1000, ("hour", "minute"): 60, ("minute", "second"): 60,
                ("day", "hour"): 24, ("week", "day"): 7}


def check_units(text: str) -> int:
    n = 0
    for amount, unit, converted, other in re.findall(rf"^({NUM}) ([a-z]+?)s? = ({NUM}) ([a-z]+?)s?$", text, re.M):
        assert d(amount) * UNIT_FACTORS[(unit, other)] == d(converted), (amount, unit, converted, other)
        n += 1
    for c, f in re.findall(r"(-?\d+) °C = (-?[\d.]+) °F", text):
        assert Fraction(int(c)) * Fraction(9, 5) + 32 == Fraction(d(f))
        n += 1
    return n


def weekday_dates(text: str) -> Iterator[dt.date]:
    for wd, day, month, year in re.findall(DATE, text):
        assert zeller(int(year), MONTHS.index(month) + 1, int(day)) == DAYS.index(wd), f"{wd}, {day} {month} {year}"
        yield dt.date(int(year), MONTHS.index(month) + 1, int(day))


FIXED_HOLIDAYS = {"New Year's Day": (1, 1), "Valentine's Day": (2, 14), "Saint Patrick's Day": (3, 17),
                  "Independence Day in the United States": (7, 4), "Halloween": (10, 31),
                  "Remembrance Day": (11, 11), "Christmas Eve": (12, 24), "Christmas Day": (12, 25),
                  "Boxing Day": (12, 26), "New Year's Eve": (12, 31)}


def sentences(pattern: str, text: str) -> list[str]:
    return [m.group(0) for m in re.finditer(pattern, text)]


def test_calendar_statements_are_true() -> None:
    checked: Counter[str] = Counter()
    for _, text in calendar_pages():
        checked["weekday"] += len(list(weekday_dates(text)))
        for wd, month, day, year in re.findall(rf"({'|'.join(DAYS)}), ({'|'.join(MONTHS)}) (\d+), (\d{{4}})", text):
            assert zeller(int(year), MONTHS.index(month) + 1, int(day)) == DAYS.index(wd)
        for sentence in sentences(rf"[A-Z][\w -]*? (?:days?|weeks?) (?:after|before) {DATE} is {DATE}\.", text):
            words = {"One": 1, "Two": 2, "Three": 3, "Five": 5, "Seven": 7, "Ten": 10, "Fourteen": 14, "Thirty": 30,
                     "Forty-five": 45, "Sixty": 60, "Ninety": 90, "A hundred": 100}
            count = next(v for k, v in words.items() if sentence.startswith(k + " "))
            step = 7 if " week" in sentence else 1
            start, end = list(weekday_dates(sentence))
            sign = 1 if " after " in sentence else -1
            assert end.toordinal() - start.toordinal() == sign * count * step, sentence
            checked["interval"] += 1
        for sentence in sentences(rf"From {DATE} to {DATE} is \d+ days", text):
            start, end = list(weekday_dates(sentence))
            assert end.toordinal() - start.toordinal() == int(sentence.split(" is ")[1].split()[0])
            checked["span"] += 1
        for sentence in sentences(rf"{DATE} is day \d+ of the year.*? written \S+; in the United States \S+ "
                                   rf"\(.*?\) and in most of Europe [\d/]+\.", text):
            (day,) = list(weekday_dates(sentence.split(" is day")[0]))
            day_of_year = day.toordinal() - dt.date(day.year, 1, 1).toordinal() + 1
            assert int(sentence.split(" is day ")[1].split()[0]) == day_of_year
            iso, us, eu = re.findall(r"written (\S+);.*?States (\S+) .*?Europe ([\d/]+)\.", sentence)[0]
            assert iso == f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
            assert us == f"{day.month:02d}/{day.day:02d}/{day.year}"
            assert eu == f"{day.day:02d}/{day.month:02d}/{day.year}"
            checked["formats"] += 1
        for month, year, days, first, last in re.findall(rf"({'|'.join(MONTHS)}) (\d{{4}}) has (\d+) days\. It begins "
                                                         rf"on a (\w+) and ends on a (\w+)\.", text):
            m, y = MONTHS.index(month) + 1, int(year)
            length = (dt.date(y + (m == 12), m % 12 + 1, 1) - dt.date(y, m, 1)).days
            assert int(days) == length
            assert (DAYS.index(first), DAYS.index(last)) == (zeller(y, m, 1), zeller(y, m, length))
            checked["month"] += 1
        for year, verdict in re.findall(r"(\d{4}) is (a|not a) leap year", text):
            y = int(year)
            assert (verdict == "a") == (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0))
            checked["leap"] += 1
        for nth, wd, month, year, day in re.findall(rf"The (first|second|third|fourth|last) ({'|'.join(DAYS)}) of "
                                                    rf"({'|'.join(MONTHS)}) (\d{{4}}) is the (\d+)", text):
            m, y = MONTHS.index(month) + 1, int(year)
            matches = [x for x in range(1, 32) if _valid(y, m, x) and zeller(y, m, x) == DAYS.index(wd)]
            expected = matches[-1] if nth == "last" else matches[["first", "second", "third", "fourth"].index(nth)]
            assert int(day) == expected
            checked["nth weekday"] += 1
        title_month, title_year = text.split("\n", 1)[0].split()
        for abbr, day, mon, start, s12, length, end, e12 in re.findall(
                r"- (\w{3}) (\d+) (\w{3}), (\d\d:\d\d) \((\d+:\d\d [ap]m)\): .*?; it lasts ([\w ]+?) and ends at "
                r"(\d\d:\d\d) \((\d+:\d\d [ap]m)\)\.", text):
            assert mon == title_month[:3]
            assert abbr == DAYS[zeller(int(title_year), MONTHS.index(title_month) + 1, int(day))][:3]
            minutes = sum(int(n) * (60 if u.startswith("hour") else 1) for n, u in re.findall(r"(\d+) (\w+)", length))
            h, m = map(int, start.split(":"))
            assert h * 60 + m + minutes == sum(x * y for x, y in zip(map(int, end.split(":")), (60, 1), strict=True))
            for t24, t12 in ((start, s12), (end, e12)):
                hh, mm = map(int, t24.split(":"))
                assert t12 == f"{hh % 12 or 12}:{mm:02d} {'am' if hh < 12 else 'pm'}"
            checked["diary"] += 1
        _, _, listed = text.partition("Holidays and observances: ")
        for wd, day, month, year, name in re.findall(rf"{DATE}: ([^;.]+)", listed):
            when = dt.date(int(year), MONTHS.index(month) + 1, int(day))
            if name == "Easter Sunday":
                assert when == dateutil_easter(when.year)
            elif name.startswith("Thanksgiving"):
                assert wd == "Thursday" and when.month == 11 and 22 <= when.day <= 28
            elif name.startswith("Labor Day"):
                assert wd == "Monday" and when.month == 9 and when.day <= 7
            elif name.startswith("Mother's Day"):
                assert wd == "Sunday" and when.month == 5 and 8 <= when.day <= 14
            else:  # every other holiday has a fixed date
                assert FIXED_HOLIDAYS[name] == (when.month, when.day), name
            checked["holiday"] += 1
    assert min(checked.values()) >= 20, checked


def _valid(year: int, month: int, day: int) -> bool:
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def test_generated_sources_are_reproducible_and_varied() -> None:
    assert arithmetic_documents(20, 0) == arithmetic()[:20]  # document i depends on (seed, i) only
    assert arithmetic_documents(5, 1) != arithmetic()[:5]
    texts = [t for _, t in arithmetic()] + [t for _, t in calendar_pages()]
    assert len(set(texts)) == len(texts)
    assert any("9.11" in t for t in texts) and any("remainder" in t for t in texts)


# -- the npm fetcher, against a real HTTP server ---------------------------------------------

def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def npm_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "registry"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("NEURODBG_NPM_REGISTRY", f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        yield root
    finally:
        server.shutdown()
        server.server_close()


def test_npm_fetch_checks_integrity_and_reads_members(npm_registry: Path, tmp_path: Path) -> None:
    data = _tarball({"package/data/b.json": b'{"x": 2}', "package/data/a.json": b'{"x": 1}',
                     "package/README.md": b"hi", "../escape.json": b"{}"})
    where = npm_registry / "@scope" / "pkg" / "-"
    where.mkdir(parents=True)
    (where / "pkg-1.0.0.tgz").write_bytes(data)
    work = tmp_path / "work"
    work.mkdir()
    probe = work / "probe.tgz"
    probe.write_bytes(data)
    good = integrity_of(probe)
    got = fetch_npm_tarball("@scope/pkg", "1.0.0", good, work, progress=False, error=CorpusError)
    assert tarball_members(got, "package/data/", ".json") == [("package/data/a.json", b'{"x": 1}'),
                                                               ("package/data/b.json", b'{"x": 2}')]
    assert not (tmp_path / "escape.json").exists()
    wrong = "sha512-" + "A" * 86 + "=="
    with pytest.raises(CorpusError, match=r"^integrity mismatch for @scope/pkg@1\.0\.0: expected sha512-AAAA"):
        fetch_npm_tarball("@scope/pkg", "1.0.0", wrong, work, progress=False, error=CorpusError)
    with pytest.raises(CorpusError, match=r"could not download @scope/pkg@9\.9\.9 from http://127\.0\.0\.1:\d+: "
                                          r"HTTP 404"):
        fetch_npm_tarball("@scope/pkg", "9.9.9", good, work, progress=False, error=CorpusError)
    with pytest.raises(CorpusError, match="holds no file under 'package/nothing/'"):
        tarball_members(got, "package/nothing/", error=CorpusError)
    (work / "broken.tgz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorpusError, match="is not a readable npm tarball"):
        tarball_members(work / "broken.tgz", "package/", error=CorpusError)
