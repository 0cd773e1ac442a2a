"""Short fuzz budget for ``make test``: every entry point of
fuzz_targets.py gets a few hundred generated inputs (``make fuzz`` runs the
long campaign).  A failure shows the shrunk input that broke Kestrel; fix
Kestrel, never the fuzzer.  Budget: FUZZ_EXAMPLES (per target, default
below) so the whole directory stays under a minute."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from fuzz_targets import TARGETS

EXAMPLES = {"eql-compile": 300, "eql-eval": 150, "jsonl": 400, "klog": 400, "profile": 200, "pack": 100}
HANG_S = float(os.environ.get("FUZZ_HANG_S", "3"))
"""One input taking longer than this is a hang (the campaign uses 1 s; pytest runs beside other work)."""


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz(name):
    target = TARGETS[name]
    n = int(os.environ.get("FUZZ_EXAMPLES", "0")) or EXAMPLES[name]

    # No "explain" phase: it re-runs a failing case many times (90 s on a pack) to say which lines it hit.
    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[p for p in Phase if p.name != "explain"])
    @given(target.strategy)
    def check(value):
        start = time.monotonic()
        target.run(value)
        took = time.monotonic() - start
        assert took < HANG_S, f"{name}: one input took {took:.1f} s"

    check()
