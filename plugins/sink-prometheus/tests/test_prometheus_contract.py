"""The lifecycle contract every Kestrel sink passes (kestrel_core.testing)."""

from __future__ import annotations

from typing import Iterator

import pytest

from kestrel_core.testing import SinkContract, make_context
from kestrel_sink_prometheus import PrometheusSink


class TestPrometheusSinkContract(SinkContract):
    @pytest.fixture
    def sink(self) -> Iterator[PrometheusSink]:
        sink = PrometheusSink(PrometheusSink.Settings(address="127.0.0.1:0"), make_context())
        yield sink
        sink.close()
