"""The runtime conformance kit (kestrel_core.testing.RuntimeConformance) run
by the host runtime and by the Predicate ABI's reference runtime."""

from kestrel_core.testing import RuntimeConformance


class TestHostRuntimeKit(RuntimeConformance):
    RUNTIME = "host"


class TestAbiReferenceRuntimeKit(RuntimeConformance):
    RUNTIME = "abi-ref"
