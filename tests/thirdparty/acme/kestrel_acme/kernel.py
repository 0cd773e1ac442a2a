"""A source that needs a kernel facility this host does not have: its probe
says so, and the run goes on without it."""

from __future__ import annotations

import threading

from kestrel_core.interfaces import Emit, Probe, Source


class AcmeKernelSource(Source):
    PLUGIN_NAME = "acme-kernel"
    DESCRIPTION = "events from the (fictional) acme kernel module"

    @classmethod
    def probe(cls) -> Probe:
        return Probe.missing("needs the acme kernel module (/sys/kernel/acme)")

    def run(self, emit: Emit, stop: threading.Event) -> None:  # pragma: no cover - never started
        raise AssertionError("an unavailable source must not be started")
