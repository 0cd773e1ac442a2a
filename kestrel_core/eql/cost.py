"""Inline budget: is a rule cheap enough, and bounded, to decide inline?

Enforce-mode rules are evaluated on the decision path of a blocked syscall
(a fanotify permission event waits for the answer) and their sequences hold
state that arms blocks, so their cost must be bounded whatever the input.
Matching is linear-time for every rule now (wildcards by first occurrence,
regex on RE2: docs/eql-semantics.md, "Patterns"); these limits stay the
enforce-mode policy: they keep the per-value cost small, not just bounded,
and the rule portable to backtracking engines (the reasons below name the
cost such an engine would pay):

* regular expressions: no nested quantifier (``(a+)+``: exponential
  backtracking in Python's ``re``), no leading unanchored ``.*`` / ``.+``
  (``re.fullmatch`` retries it at every position: quadratic), no
  backreference, at most :data:`MAX_PATTERN_LEN` characters;
* wildcards (``:``, ``like``): at most :data:`MAX_WILDCARD_STARS` ``*`` per
  pattern (each one multiplies the backtracking of the compiled pattern);
* sequences: at most :data:`MAX_SEQUENCE_STEPS` steps, and a window:
  ``with maxspan`` (at most :data:`MAX_MAXSPAN_S`) or an ``until`` step;
  without either a partial arms a block for as long as the process lives.

A failing rule is not enforced: the pack loader reports a located error and
runs the rule in shadow mode (:func:`kestrel_core.packs.load_packs`).

Every rule, whatever its mode, is also checked for nested unbounded
quantifiers (:func:`kestrel_core.eql.patterns.regex_warning`): Kestrel matches regexes with RE2, in
linear time, so such a pattern cannot stall detection here, but it is a
denial-of-service pattern wherever the rule is also run by a backtracking
engine; the compiler reports it at the rule's strictness (a warning, or an
error with ``strictness = "error"``).
"""

from __future__ import annotations

from typing import Any, Iterator

from . import ir
from .errors import EqlError, EqlSemanticError
from .patterns import MAX_PATTERN_LEN, MAX_WILDCARD_STARS, regex_problem, regex_warning, wildcard_problem

__all__ = ["MAX_PATTERN_LEN", "MAX_WILDCARD_STARS", "MAX_SEQUENCE_STEPS", "MAX_MAXSPAN_S", "check_rule", "query_problems",
           "regex_problem", "regex_warning", "wildcard_problem"]

MAX_SEQUENCE_STEPS = 5
MAX_MAXSPAN_S = 3600

def query_problems(query: ir.Query) -> Iterator[tuple[str, str | None]]:
    """(problem, offending pattern or None) for one compiled query."""
    for node in query.nodes:
        if node.op not in ("regex", "wildcard") or not node.value:
            continue
        check = regex_problem if node.op == "regex" else wildcard_problem
        for pattern in node.value:
            why = check(pattern)
            if why:
                yield why, pattern
    if query.kind == "sequence":
        if len(query.steps) > MAX_SEQUENCE_STEPS:
            yield f"sequence of {len(query.steps)} steps (at most {MAX_SEQUENCE_STEPS} in enforce mode)", None
        if query.maxspan_ns is None and query.until is None:
            yield "sequence without 'with maxspan' or 'until': its window never ends", None
        elif query.maxspan_ns is not None and query.maxspan_ns > MAX_MAXSPAN_S * 10**9:
            yield f"sequence window over {MAX_MAXSPAN_S} s", None


def _locate(query_text: str, pattern: str | None) -> tuple[int, int, str]:
    """(line, column, text of that line) in query coordinates: where the pattern is written."""
    lines = query_text.split("\n")
    if pattern:
        for needle in (f'"{pattern}"', f"'{pattern}'", pattern):
            for n, text in enumerate(lines):
                col = text.find(needle)
                if col >= 0:
                    return n + 1, col + 1, text
    return 1, 1, lines[0] if lines else ""


def check_rule(rule: Any, schema: Any) -> list[EqlError]:
    """Located cost problems of ``rule`` (query coordinates; relocate with
    :func:`kestrel_core.rules.locate_eql_error`).  A query that does not compile
    is not judged here: the engine reports it."""
    from ..exceptionlists import compile_rule_query

    try:  # with its exceptions: they run inline too
        query = compile_rule_query(rule, schema, strict="off")
    except EqlError:
        return []
    out: list[EqlError] = []
    for why, pattern in query_problems(query):
        line, col, text = _locate(rule.query, pattern)
        out.append(EqlSemanticError(f"not allowed in enforce mode (inline budget): {why}; the rule runs in "
                                    "shadow mode", line, col, rule.source_name, text))
    return out
