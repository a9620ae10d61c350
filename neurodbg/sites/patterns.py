"""Site patterns: ``layers.*.mlp.act``, ``layers.3-7.resid_out``, ``layers.1,4.mlp.*``.

A pattern is split on dots into tokens. ``*`` matches one token, ``**`` any
number of tokens, ``A-B`` a number in the closed range, ``a,b,c`` any listed
alternative; anything else uses shell-style matching on the token."""

from __future__ import annotations

import fnmatch
import re

_RANGE = re.compile(r"^(\d+)-(\d+)$")


def _token_matches(pattern: str, token: str) -> bool:
    if "," in pattern:
        return any(_token_matches(p, token) for p in pattern.split(","))
    if (rng := _RANGE.match(pattern)) and token.isdigit():
        return int(rng[1]) <= int(token) <= int(rng[2])
    return fnmatch.fnmatchcase(token, pattern)


def _match(pats: list[str], toks: list[str]) -> bool:
    if not pats:
        return not toks
    if pats[0] == "**":
        return any(_match(pats[1:], toks[i:]) for i in range(len(toks) + 1))
    return bool(toks) and _token_matches(pats[0], toks[0]) and _match(pats[1:], toks[1:])


def matches(pattern: str, name: str) -> bool:
    """True when dotted `name` matches dotted `pattern`."""
    return _match(pattern.split(".") if pattern else [], name.split(".") if name else [])


def is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*,?[") or bool(re.search(r"(^|\.)\d+-\d+(\.|$|:)", text))
