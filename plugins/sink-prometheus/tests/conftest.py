from __future__ import annotations

import urllib.error
import urllib.request
from typing import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kestrel_core.runtime import RunContext
from kestrel_core.schema import Schema
from kestrel_sink_prometheus import PrometheusSink


@pytest.fixture
def context() -> RunContext:
    return RunContext(schema=Schema())


@pytest.fixture
def open_sink(context: RunContext) -> Iterator[Callable[..., PrometheusSink]]:
    """Build and open a sink (default: a free port on 127.0.0.1); closed at teardown."""
    sinks: list[PrometheusSink] = []

    def make(ctx: RunContext | None = None, **settings: str) -> PrometheusSink:
        settings.setdefault("address", "127.0.0.1:0")
        sink = PrometheusSink(PrometheusSink.Settings(**settings), ctx or context)
        sinks.append(sink)
        sink.open()
        return sink

    yield make
    for sink in sinks:
        sink.close()


def _get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; the server is listening once
    ``open()`` returned, so no waiting is needed."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def _scrape(sink: PrometheusSink) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET the sink's metrics page and parse it: {(sample name, sorted labels): value}."""
    status, ctype, body = _get(sink.url)
    assert status == 200, body
    assert ctype.startswith("text/plain"), ctype
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return samples


def _families(sink: PrometheusSink) -> dict[str, str]:
    """Family name -> type, from a real scrape."""
    status, _, body = _get(sink.url)
    assert status == 200
    return {f.name: f.type for f in text_string_to_metric_families(body)}


@pytest.fixture
def http_get() -> Callable[[str], tuple[int, str, str]]:
    return _get


@pytest.fixture
def scrape() -> Callable[[PrometheusSink], dict]:
    return _scrape


@pytest.fixture
def metric_types() -> Callable[[PrometheusSink], dict[str, str]]:
    return _families
