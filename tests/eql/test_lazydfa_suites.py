"""The lazy DFA on and off through the whole-engine suites: the EQL
conformance corpus and the differential suite against eql (through
``kestrel eval``), the Linux pack's golden tests, and the demo replay, which
must be byte-identical with every eligible sequence on its DFA from the
first event, and with the DFA off.  Each run also checks that the DFA was
used, so these fail if it silently is not."""

from __future__ import annotations

import io

import pytest

from kestrel_core.eql import engine as engine_mod
from kestrel_core.eql import lazydfa
from kestrel_core.eql.sequence import EngineLimits
from kestrel_core.testing import _CorpusKit, kestrel_root

MODES = {"always": dict(lazy_dfa=True, dfa_hot_hits=0), "off": dict(lazy_dfa=False)}


@pytest.fixture
def dfa_mode(monkeypatch):
    """set(mode) makes every engine built without explicit limits use that DFA
    mode; returns a list that counts the batches the DFA consumed."""
    used = []
    feed = lazydfa.DfaSequenceMatcher.feed_hits

    def counted(self, hits, events, emit):
        n = self.dfa_events
        out = feed(self, hits, events, emit)
        if self.dfa_events > n:
            used.append(1)
        return out

    monkeypatch.setattr(lazydfa.DfaSequenceMatcher, "feed_hits", counted)

    def set_mode(mode: str) -> list:
        monkeypatch.setattr(engine_mod, "EngineLimits", lambda: EngineLimits(**MODES[mode]))
        used.clear()
        return used

    return set_mode


@pytest.mark.parametrize("mode", ["always", "off"])
class TestCorpusWithLazyDfa(_CorpusKit):
    KIND = "lazy-dfa"

    @pytest.fixture(autouse=True)
    def _mode(self, dfa_mode, mode):
        self.mode = mode
        self.used = dfa_mode(mode)
        yield
        if mode == "always":
            assert self.used, "no sequence ran on the lazy DFA"
        else:
            assert not self.used

    def component(self) -> str:
        return self.mode

    def cli_args(self) -> list[str]:
        return []


@pytest.mark.parametrize("mode", ["always", "off"])
def test_linux_pack_golden_tests(dfa_mode, mode):
    from kestrel_core.packs import load_packs, run_rule_test

    used = dfa_mode(mode)
    ps = load_packs([kestrel_root() / "rules" / "linux"])
    assert ps.ok, [str(e) for e in ps.errors]
    outcomes = [run_rule_test(r, t) for r in ps.rules for t in r.tests]
    assert len(outcomes) >= 50
    assert [f"{o.rule_id} / {o.test}: {o.detail}" for o in outcomes if not o.passed] == []
    assert bool(used) == (mode == "always")


def test_demo_replay_byte_identical_on_and_off(dfa_mode):
    from kestrel_core.replay import replay

    root = kestrel_root()
    log_path, pack = root / "demo" / "capture.klog", root / "rules" / "linux"
    outs = {}
    for mode in ("off", "always"):
        used = dfa_mode(mode)
        outs[mode] = io.BytesIO()
        result = replay([log_path], [pack], outs[mode])
        assert result.footer["counts"]["alerts"] >= 50
        assert bool(used) == (mode == "always")
    assert outs["always"].getvalue() == outs["off"].getvalue()
