"""`kestrel run --help` and docs/profile-reference.md describe the bundled
default profile as it is.

The expected description is derived from kestrel_core/data/default.toml
itself: its source fallback chain (each source's type, and the stem of its
file if it reads one), its rule packs and its sinks must be named, in the
chain's order, in both texts, and neither may claim stdin unless the chain
reads stdin.  Changing the profile, the help string or the page alone fails.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from kestrel_core.cli import default_profile_path, main

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_MD = ROOT / "docs" / "profile-reference.md"


def source_chain(table: dict) -> list[dict]:
    """A [[sources]] entry and its fallbacks, first to last."""
    chain = [table]
    while "fallback" in chain[-1]:
        nxt = chain[-1]["fallback"]
        chain.append(nxt if isinstance(nxt, dict) else {"type": nxt})  # fallback = "name" is a bare type
    return chain


def expected_words(profile: dict) -> list[str]:
    """What a description of the profile must name, in this order."""
    words = []
    for source in profile["sources"]:
        for entry in source_chain(source):
            words.append(entry["type"])
            if entry.get("path") not in (None, "-"):
                words.append(Path(entry["path"]).stem)  # demo.klog -> "demo"
    words += [p for p in profile.get("rules", {}).get("paths", [])]
    words += [sink["type"] for sink in profile.get("sinks", [])]
    return words


def reads_stdin(profile: dict) -> bool:
    return any(e.get("path") == "-" for s in profile["sources"] for e in source_chain(s))


def assert_describes(text: str, profile: dict, where: str) -> None:
    flat = " ".join(text.split())
    pos = 0
    for word in expected_words(profile):
        m = re.compile(rf"(?<![\w/-]){re.escape(word)}(?![\w/-])", re.I).search(flat, pos)
        assert m, f"{where} does not name {word!r} (in the order of the bundled profile: " \
                  f"{expected_words(profile)}) after {flat[:pos][-60:]!r}:\n{flat}"
        pos = m.end()
    if not reads_stdin(profile):
        assert "stdin" not in flat.lower(), f"{where} says the bundled profile reads stdin; it does not:\n{flat}"


@pytest.fixture(scope="module")
def bundled() -> dict:
    profile = tomllib.loads(default_profile_path().read_text(encoding="utf-8"))
    assert len(source_chain(profile["sources"][0])) >= 2, "the bundled profile lost its fallback chain"
    return profile


def test_expected_words_come_from_the_profile(bundled):
    words = expected_words(bundled)
    # the chain as the README and default.toml's comment describe it today
    assert words[:4] == ["ebpf", "portable", "klog", "demo"], words
    assert not reads_stdin(bundled)


def test_run_help_describes_the_bundled_profile(bundled):
    result = CliRunner().invoke(main, ["run", "--help"], prog_name="kestrel")
    assert result.exit_code == 0, result.output
    option = re.search(r"--profile\b.*?(?=\n\s+-[-\w]|\Z)", result.output, re.S)
    assert option, result.output
    assert "bundled" in option.group(0)
    assert_describes(option.group(0), bundled, "`kestrel run --help` (--profile)")


def test_profile_reference_describes_the_bundled_profile(bundled):
    text = REFERENCE_MD.read_text(encoding="utf-8")
    m = re.search(r"Without `--profile`.*?(?=Copy it)", text, re.S)
    assert m, "docs/profile-reference.md: no 'Without `--profile` ... Copy it' description of the bundled profile"
    assert "default.toml" in m.group(0)
    assert_describes(m.group(0), bundled, "docs/profile-reference.md")


def test_a_drifted_description_fails(bundled):
    """The check itself: the old wording (stdin), and the chain out of order, are rejected."""
    with pytest.raises(AssertionError, match="stdin|does not name"):
        assert_describes("the bundled profile: JSONL on stdin, bundled rules, console alerts", bundled, "old")
    with pytest.raises(AssertionError, match="does not name"):
        assert_describes("portable, else ebpf, else klog demo; rules/linux; console", bundled, "swapped")
