"""Settings validation, binding, closing, probe and plugin discovery."""

from __future__ import annotations

import errno
import socket
import urllib.error
import urllib.request
from importlib.metadata import entry_points

import pytest

from kestrel_core.interfaces import Sink
from kestrel_sink_prometheus import MetricsBindError, PrometheusSink, parse_address

# ------------------------------------------------------------------ address parsing


@pytest.mark.parametrize(
    "address, expected",
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9464", ("::1", 9464)),
        ("[::]:80", ("::", 80)),
        ("[fe80::1%eth0]:9464", ("fe80::1%eth0", 9464)),
    ],
)
def test_parse_address(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    "address, why",
    [
        ("127.0.0.1", "missing ':port'"),
        ("127.0.0.1:", "is not a number"),
        ("127.0.0.1:http", "is not a number"),
        ("127.0.0.1:-1", "is not a number"),
        ("127.0.0.1:65536", "out of range"),
        (":9464", "missing host"),
        ("::1:9464", "IPv6 host must be written in brackets"),
        ("[::1:9464", "without a closing"),
        ("[::1]9464", "missing ':port'"),
        ("[127.0.0.1]:9464", "only for IPv6"),
        ("[nothost]:9464", "not an IPv6 address"),
        (" 127.0.0.1:9464", "whitespace"),
        ("", "empty"),
    ],
)
def test_bad_address_is_a_clear_error(address, why):
    with pytest.raises(ValueError) as info:
        parse_address(address)
    message = str(info.value)
    assert why in message
    assert repr(address) in message
    assert "host:port" in message


def test_settings_validate_address_and_path():
    assert PrometheusSink.Settings() == PrometheusSink.Settings(address="127.0.0.1:9464", path="/metrics")
    with pytest.raises(ValueError, match=r"invalid address '127\.0\.0\.1:99999'"):
        PrometheusSink.Settings(address="127.0.0.1:99999")
    with pytest.raises(ValueError, match=r"invalid path 'metrics'"):
        PrometheusSink.Settings(path="metrics")
    with pytest.raises(TypeError):  # kw_only, as the profile loader builds it
        PrometheusSink.Settings("127.0.0.1:1")


# ------------------------------------------------------------------ binding and closing


def _free_port_owner() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_port_zero_reports_the_bound_port(open_sink):
    sink = open_sink()
    host, port = parse_address(sink.bound_address)
    assert host == "127.0.0.1" and port != 0
    assert sink.url == f"http://127.0.0.1:{port}/metrics"


def test_close_frees_the_port(context, open_sink, scrape):
    sink = open_sink()
    scrape(sink)
    address, url = sink.bound_address, sink.url
    sink.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=10)
    # the same port can be bound again, by a new sink on it ...
    again = open_sink(address=address)
    assert again.bound_address == address
    scrape(again)
    again.close()
    # ... and by any other server.  (SO_REUSEADDR, as servers set it: the
    # scrapes left TIME_WAIT connections on the port; on Linux the option
    # still refuses a port that has a listening socket.)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(parse_address(address))
        s.listen()


def test_close_is_idempotent_and_safe_before_open(context):
    sink = PrometheusSink(PrometheusSink.Settings(address="127.0.0.1:0"), context)
    sink.close()
    sink.open()
    sink.close()
    sink.close()


def test_port_in_use_is_a_clear_error(context):
    with _free_port_owner() as owner:
        address = "127.0.0.1:%d" % owner.getsockname()[1]
        sink = PrometheusSink(PrometheusSink.Settings(address=address), context)
        with pytest.raises(MetricsBindError) as info:
            sink.open()
    assert str(info.value).startswith(f"sink prometheus: cannot listen on {address}: ")
    assert info.value.errno == errno.EADDRINUSE
    assert isinstance(info.value, OSError)
    sink.close()  # nothing was opened; still fine


def test_unresolvable_host_is_a_clear_error(context):
    sink = PrometheusSink(PrometheusSink.Settings(address="no-such-host.invalid:0"), context)
    with pytest.raises(MetricsBindError, match=r"cannot listen on no-such-host\.invalid:0"):
        sink.open()


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_ipv6_address(context, open_sink, scrape):
    context.stats.queue_depth = 3
    sink = open_sink(address="[::1]:0")
    assert sink.bound_address.startswith("[::1]:")
    assert sink.url.startswith("http://[::1]:")
    assert scrape(sink)[("kestrel_queue_events", ())] == 3


# ------------------------------------------------------------------ probe and plugin discovery


def test_probe_available():
    probe = PrometheusSink.probe()
    assert probe.available, probe.reason


def test_probe_reports_missing_client(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "prometheus_client" else real(name, *a))
    probe = PrometheusSink.probe()
    assert not probe.available
    assert "prometheus_client" in probe.reason


def test_component_shape():
    assert issubclass(PrometheusSink, Sink)
    assert PrometheusSink.PLUGIN_NAME == "prometheus"
    assert PrometheusSink.ROLE == "sink"


def test_entry_point_is_discoverable_and_registers_the_sink():
    import pluggy

    from kestrel_core import hookspecs

    (ep,) = [e for e in entry_points(group="kestrel.plugins") if e.name == "sink-prometheus"]
    assert ep.value == "kestrel_sink_prometheus.plugin"
    # the distribution is being renamed kestrel-sink-prometheus -> kestrel-edr-sink-prometheus
    assert ep.dist is not None and ep.dist.metadata["Name"] in ("kestrel-edr-sink-prometheus", "kestrel-sink-prometheus")
    module = ep.load()

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(module, name=ep.name)
    pm.check_pending()
    registered: list[type] = []
    pm.hook.kestrel_register_sinks(register=registered.append)
    assert registered == [PrometheusSink]
