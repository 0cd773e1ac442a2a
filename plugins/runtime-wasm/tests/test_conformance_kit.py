"""runtime-wasm through Kestrel's runtime conformance kit: the conformance
corpus, the differential suite against eql, the Linux pack's golden tests
and the demo replay, with the host runtime's results."""

from kestrel_core.testing import RuntimeConformance


class TestWasmConformance(RuntimeConformance):
    RUNTIME = "wasm"
