"""Literal extraction: what each operator and pattern yields, and that every
extracted literal really is necessary (checked against `re` on random strings)."""

from __future__ import annotations

import random
import re

import pytest

from kestrel_core.eql import ir
from kestrel_core.schema import Schema
from kestrel_core.eql import literals as L


@pytest.mark.parametrize("pattern,ci,want", [
    ("foo.*bar", False, {("prefix", "foo")}),
    ("/usr/bin/(curl|wget)", False, {("prefix", "/usr/bin/")}),
    ("(?i)PowerShell.*", False, {("prefix", "powershell")}),
    ("a|bcd.*", False, {("exact", "a"), ("prefix", "bcd")}),
    ("[a-z]+\\.sh", False, {("suffix", ".sh")}),
    (".*\\.SSH/id_rsa", True, {("suffix", ".ssh/id_rsa")}),
    (".*(xyz)+.*", False, {("contains", "xyz")}),
    ("abc", True, {("exact", "abc")}),
])
def test_regex_literals(pattern, ci, want):
    got = L.regex_alts(pattern, ci)
    assert got is not None and got[1] == frozenset(want)


@pytest.mark.parametrize("pattern", [".*", "[abc]+", "(?i:ab).*", "\\d+", "a?b?c?", ".*(a|b).*", "(a|b)\\1"])
def test_regex_without_a_usable_literal_has_no_key(pattern):
    assert L.regex_alts(pattern, False) is None


@pytest.mark.parametrize("pattern,ci,want", [
    ("nc", True, ("exact", "nc")),
    ("nc*", True, ("prefix", "nc")),
    ("*.sh", False, ("suffix", ".sh")),
    ("*/tmp/*", True, ("contains", "/tmp/")),
    ("/dev/tcp/*", True, ("prefix", "/dev/tcp/")),
    ("*x?yzw*", True, ("contains", "yzw")),
    ("*ab*", True, None),           # an inner literal shorter than 3 characters
    ("*", True, None),
    ("İnst*", True, ("prefix", "i")),  # only the ASCII run is used case-insensitively
])
def test_wildcard_literals(pattern, ci, want):
    assert L.wildcard_alt(pattern.lower() if ci else pattern, ci) == want


def test_ci_norm_folds_what_re_ignorecase_equates_with_ascii():
    for ch in ("\u0130", "\u0131", "\u017f", "\u212a"):
        assert re.fullmatch("[a-z]", ch, re.I)
        assert L.ci_norm(ch).isascii()


def _random_strings(r, alphabet, n):
    return ["".join(r.choice(alphabet) for _ in range(r.randrange(0, 12))) for _ in range(n)]


@pytest.mark.parametrize("pattern", ["ab.*cd", "x(yz)+w.*", "(?i)QRS.*t", ".*abc.*", "a[bc]d(ef|gh)ij",
                                     "(abc|abd)x.*", ".*k\\.sh", "s.{2}ks"])
def test_every_extracted_literal_is_necessary(pattern):
    """Strings the regex fully matches always hold one of the alternatives."""
    got = L.regex_alts(pattern, False)
    assert got is not None
    ci, alts = got
    rx = re.compile(pattern, re.DOTALL)
    r = random.Random(pattern)
    pieces = ["ab", "cd", "x", "yz", "w", "QRS", "qrs", "t", "abc", "abd", "a", "bd", "ef", "gh", "ij", "k.sh",
              "s", "ſ", "K", "k", "İ", "ks", "abdef", "acdgh"]
    hits = 0
    for _ in range(20000):
        s = "".join(r.choice(pieces) for _ in range(r.randrange(1, 6)))
        if not rx.fullmatch(s):
            continue
        hits += 1
        w = L.ci_norm(s) if ci else s
        assert any((k == "exact" and w == lit) or (k == "prefix" and w.startswith(lit))
                   or (k == "suffix" and w.endswith(lit)) or (k == "contains" and lit in w) for k, lit in alts), (s, alts)
    assert hits > 0


def test_keys_of_boolean_structure():
    schema = Schema.ecs()
    q = ir.compile_query('process where (process.name == "a" or process.name : "b*") and process.pid > 3', schema)
    key = L.node_key(q.nodes, q.steps[0].pred)
    assert key is not None and {a for c in key for a in c.alts} == {("exact", "a"), ("prefix", "b")}
    q = ir.compile_query('process where process.name == "a" or process.pid > 3', schema)
    assert L.node_key(q.nodes, q.steps[0].pred) is None  # one branch without a literal: no key
    q = ir.compile_query('process where not process.name == "a"', schema)
    assert L.node_key(q.nodes, q.steps[0].pred) is None


def test_key_json_round_trip():
    schema = Schema.ecs()
    q = ir.compile_query('process where process.name in~ ("Bash", "sh") or file.path : "*/tmp/*"', schema)
    key = L.node_key(q.nodes, q.steps[0].pred)
    assert L.key_from_json(L.key_to_json(key)) == key
