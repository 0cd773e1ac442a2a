"""What a regex or wildcard pattern costs to match, read from the pattern
alone: used by the compiler (a load-time warning for every rule) and by the
enforce-mode budget in :mod:`kestrel_core.eql.cost`."""

from __future__ import annotations

import re

MAX_PATTERN_LEN = 256
MAX_WILDCARD_STARS = 4

# a group holding a quantifier, itself quantified: (x+)+, (x*)*, (x{2,})+, (?:a|b+)*
_NESTED = re.compile(r"\((?:[^()\\]|\\.)*(?:[*+]|\{\d*,\d*\})(?:[^()\\]|\\.)*\)(?:[*+]|\{\d*,\d*\})")
_LEADING_ANY = re.compile(r"^\^?(?:\.[*+]|\(\?:?\.[*+]\))")
_BACKREF = re.compile(r"\\[1-9]|\(\?P=")


def nested_quantifier(pattern: str) -> bool:
    """Whether ``pattern`` repeats, without bound, a part that itself holds an
    unbounded repeat (``(a+)+``, ``((a|b)*c)*``, ``(?:x{2,})+``).  Read with
    Python's own regex parser, so nesting at any depth is found; a pattern it
    cannot parse falls back to a textual check."""
    try:
        from re import _parser as sre  # noqa: PLC2701 - the stdlib's parser, stable in 3.11+
        from re._constants import MAXREPEAT, MAX_REPEAT, MIN_REPEAT, POSSESSIVE_REPEAT

        tree = sre.parse(pattern)
    except Exception:  # noqa: BLE001 - RE2-only syntax, or anything Python rejects
        return bool(_NESTED.search(pattern))
    repeats = (MAX_REPEAT, MIN_REPEAT, POSSESSIVE_REPEAT)

    def walk(items: object, inside: bool) -> bool:
        for op, av in items:
            if op in repeats:
                lo, hi, sub = av
                unbounded = hi is MAXREPEAT or hi == MAXREPEAT
                if unbounded and inside:
                    return True
                if walk(sub, inside or unbounded):
                    return True
            elif op is sre.SUBPATTERN:
                if walk(av[-1], inside):
                    return True
            elif op is sre.BRANCH:
                if any(walk(b, inside) for b in av[1]):
                    return True
            elif op in (sre.ASSERT, sre.ASSERT_NOT, sre.ATOMIC_GROUP):
                if walk(av[-1], inside):
                    return True
        return False

    return walk(tree, False)


def regex_warning(pattern: str) -> str | None:
    """The load-time warning for any rule's regex (None: nothing to say)."""
    if nested_quantifier(pattern):
        return ("regular expression with a nested unbounded quantifier (like (a+)+): matched in linear time here "
                "(RE2), but exponential in backtracking engines; rewrite it without the nesting")
    return None


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` has no bounded matching cost (None: it has)."""
    if len(pattern) > MAX_PATTERN_LEN:
        return f"regular expression longer than {MAX_PATTERN_LEN} characters"
    if _BACKREF.search(pattern):
        return "regular expression with a backreference (no bounded matching time)"
    if nested_quantifier(pattern):
        return "regular expression with a nested quantifier (exponential backtracking)"
    if _LEADING_ANY.search(pattern):
        return "regular expression starting with an unanchored '.*' or '.+' (quadratic backtracking)"
    return None


def wildcard_problem(pattern: str) -> str | None:
    stars = pattern.count("*")
    if stars > MAX_WILDCARD_STARS:
        return f"wildcard pattern with {stars} '*' (at most {MAX_WILDCARD_STARS} in enforce mode)"
    return None
