"""The matcher conformance kit (kestrel_core.testing_matchers) run for acdfa,
with the precise check on and off."""

from __future__ import annotations

from kestrel_core.testing_matchers import MatcherConformance
from kestrel_matcher_acdfa import AcdfaMatcher, AcdfaSettings


class TestAcdfa(MatcherConformance):
    MATCHER = "acdfa"


class TestAcdfaWithoutPreciseCheck(MatcherConformance):
    """The funnel's last stage off: literal hits alone pick the candidates."""

    MATCHER = "acdfa"
    SEEDS = range(100, 120)

    def make_matcher(self):
        return AcdfaMatcher(AcdfaSettings(precise=False, value_cache=0))

    test_conformance_cases = test_linux_pack_golden_tests = test_demo_replay_identical_to_default = None  # type: ignore
    test_differential_against_eql = None  # type: ignore


class TestAcdfaTinyCaches(MatcherConformance):
    """An LRU of one pattern, a value memo of two and a key review every 64 events:
    evictions and dropped second keys all the time, same alerts."""

    MATCHER = "acdfa"
    SEEDS = range(200, 215)

    def make_matcher(self):
        return AcdfaMatcher(AcdfaSettings(lru_capacity=1, value_cache=2, review_events=64))

    test_conformance_cases = test_linux_pack_golden_tests = test_demo_replay_identical_to_default = None  # type: ignore
    test_differential_against_eql = None  # type: ignore
