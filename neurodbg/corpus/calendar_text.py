"""Calendar pages and dates written out: the `calendar-dates` source of the default corpus.

One document per sampled month: the month's grid, how long it is and where it
starts, one day written the ways people write dates (weekday and day, ISO 8601,
US and European numeric orders), day arithmetic, a diary of appointments in 12-
and 24-hour time with durations, leap years and the month's holidays. Dates come
from `datetime` and `calendar` (proleptic Gregorian), choices from a
`random.Random` seeded per document, so each build writes the same text; month and
day names are spelled here, not taken from the locale. Tests re-check every
weekday, interval and holiday independently."""

from __future__ import annotations

import calendar
import random
from datetime import date, timedelta

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ORDINALS = ("first", "second", "third", "fourth", "last")
APPOINTMENTS = ("dentist", "team meeting", "meeting with Sam", "piano lesson", "doctor's appointment", "haircut",
                "school meeting", "call with the bank", "yoga class", "job interview", "car service",
                "flight to Lisbon", "book club", "football practice", "visit Grandma")
COUNT_WORDS = {1: "One", 2: "Two", 3: "Three", 5: "Five", 7: "Seven", 10: "Ten", 14: "Fourteen", 30: "Thirty",
               45: "Forty-five", 60: "Sixty", 90: "Ninety", 100: "A hundred"}
FIRST_YEAR, LAST_YEAR = 1900, 2050


def long_date(d: date) -> str:
    return f"{WEEKDAYS[d.weekday()]}, {d.day} {MONTHS[d.month - 1]} {d.year}"


def us_long_date(d: date) -> str:
    return f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}"


def clock(minutes: int) -> str:
    """"14:05 (2:05 pm)": 24-hour time with its 12-hour reading."""
    h, m = divmod(minutes, 60)
    twelve = h % 12 or 12
    return f"{h:02d}:{m:02d} ({twelve}:{m:02d} {'am' if h < 12 else 'pm'})"


def duration(minutes: int) -> str:
    h, m = divmod(minutes, 60)
    parts = [f"{h} hour{'s' if h != 1 else ''}"] if h else []
    if m:
        parts.append(f"{m} minutes")
    return " ".join(parts)


def easter(year: int) -> date:
    """Western Easter Sunday (the anonymous Gregorian algorithm, Meeus/Jones/Butcher)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l = (32 + 2 * e + 2 * i - h - k) % 7  # noqa: E741 - the algorithm's own name
    m = (a + 11 * h + 22 * l) // 451
    month, day = divmod(h + l - 7 * m + 114, 31)
    return date(year, month, day + 1)


def nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th (1-based; 5 = last) `weekday` of a month."""
    days = [d for d in calendar.Calendar().itermonthdates(year, month) if d.month == month and d.weekday() == weekday]
    return days[-1] if n == 5 else days[n - 1]


def holidays(year: int, month: int) -> list[tuple[date, str]]:
    fixed = {(1, 1): "New Year's Day", (2, 14): "Valentine's Day", (3, 17): "Saint Patrick's Day",
             (7, 4): "Independence Day in the United States", (10, 31): "Halloween",
             (11, 11): "Remembrance Day", (12, 24): "Christmas Eve", (12, 25): "Christmas Day",
             (12, 26): "Boxing Day", (12, 31): "New Year's Eve"}
    found = [(date(year, m, d), name) for (m, d), name in fixed.items() if m == month]
    found += [(d, name) for d, name in ((easter(year), "Easter Sunday"),
                                        (nth_weekday(year, 5, 6, 2), "Mother's Day in the United States"),
                                        (nth_weekday(year, 11, 3, 4), "Thanksgiving in the United States"),
                                        (nth_weekday(year, 9, 0, 1), "Labor Day in the United States"))
              if d.month == month]
    return sorted(found)


def month_grid(year: int, month: int) -> str:
    rows = [f"{MONTHS[month - 1]} {year}".center(20).rstrip(), "Mo Tu We Th Fr Sa Su"]
    for week in calendar.Calendar().monthdayscalendar(year, month):
        rows.append(" ".join(f"{d:2d}" if d else "  " for d in week).rstrip())
    return "\n".join(rows)


def _month_facts(year: int, month: int) -> str:
    days = calendar.monthrange(year, month)[1]
    first, last = date(year, month, 1), date(year, month, days)
    text = (f"{MONTHS[month - 1]} {year} has {days} days. It begins on a {WEEKDAYS[first.weekday()]} and ends on a "
            f"{WEEKDAYS[last.weekday()]}.")
    if month == 2:
        text += (f" {year} is a leap year, so February has 29 days." if calendar.isleap(year) else
                 f" {year} is not a leap year, so February has 28 days.")
    return text


def _one_day(day: date) -> str:
    iso_year, iso_week, _ = day.isocalendar()
    day_of_year = day.timetuple().tm_yday
    week = f"ISO week {iso_week}" + (f" of {iso_year}" if iso_year != day.year else "")
    return (f"{long_date(day)} is day {day_of_year} of the year and falls in {week}. In ISO 8601 it is "
            f"written {day.isoformat()}; in the United States {day.month:02d}/{day.day:02d}/{day.year} "
            f"({us_long_date(day)}) and in most of Europe {day.day:02d}/{day.month:02d}/{day.year}.")


def _arithmetic(rng: random.Random, day: date) -> list[str]:
    lines = []
    for _ in range(rng.randint(2, 4)):
        n = rng.choice(sorted(COUNT_WORDS))
        unit, step = rng.choice((("days", 1), ("weeks", 7))) if n <= 14 else ("days", 1)
        delta = timedelta(days=n * step)
        unit = unit if n > 1 else unit[:-1]
        if rng.random() < 0.5:
            lines.append(f"{COUNT_WORDS[n]} {unit} after {long_date(day)} is {long_date(day + delta)}.")
        else:
            lines.append(f"{COUNT_WORDS[n]} {unit} before {long_date(day)} is {long_date(day - delta)}.")
    target = date(day.year + 1, 1, 1)
    lines.append(f"From {long_date(day)} to {long_date(target)} is {(target - day).days} days.")
    return lines


def _diary(rng: random.Random, year: int, month: int) -> str:
    days = calendar.monthrange(year, month)[1]
    entries = []
    for d in sorted(rng.sample(range(1, days + 1), rng.randint(3, 6))):
        start = rng.randrange(7 * 60, 20 * 60, 15)
        length = rng.randrange(30, 4 * 60, 15)
        what = rng.choice(APPOINTMENTS)
        day = date(year, month, d)
        entries.append(f"- {WEEKDAYS[day.weekday()][:3]} {d} {MONTHS[month - 1][:3]}, {clock(start)}: {what}; "
                       f"it lasts {duration(length)} and ends at {clock(start + length)}.")
    return "Diary\n" + "\n".join(entries)


def _recurring(rng: random.Random, year: int, month: int) -> str:
    weekday, n = rng.randrange(7), rng.randint(1, 5)
    d = nth_weekday(year, month, weekday, n)
    return (f"The {ORDINALS[n - 1]} {WEEKDAYS[weekday]} of {MONTHS[month - 1]} {year} is the {d.day}"
            f"{'th' if 10 <= d.day % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(d.day % 10, 'th')}.")


def calendar_documents(count: int, seed: int) -> list[tuple[str, str]]:
    """(id, text) of `count` month pages; document i depends only on (seed, i)."""
    docs = []
    for i in range(count):
        rng = random.Random(f"neurodbg-calendar:{seed}:{i}")
        year, month = rng.randint(FIRST_YEAR, LAST_YEAR), rng.randint(1, 12)
        day = date(year, month, rng.randint(1, calendar.monthrange(year, month)[1]))
        parts = [f"{MONTHS[month - 1]} {year}", month_grid(year, month), _month_facts(year, month),
                 _one_day(day), " ".join(_arithmetic(rng, day)), _recurring(rng, year, month),
                 _diary(rng, year, month)]
        if found := holidays(year, month):
            parts.append("Holidays and observances: " + "; ".join(f"{long_date(d)}: {name}" for d, name in found)
                         + ".")
        docs.append((f"calendar-{i:04d}", "\n\n".join(parts)))
    return docs
