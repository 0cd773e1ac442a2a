"""The API over real HTTP (the sink's own Uvicorn server) and a real SQLite file."""

from __future__ import annotations

import os
import re
import socket
import stat
import time
from importlib.metadata import entry_points

import pytest

from kestrel_core.alert import Alert
from kestrel_core.interfaces import Sink
from kestrel_core.testing import SinkContract, make_context, make_event, wait_for
from kestrel_api_server import ApiSink, ConfigError
from kestrel_api_server.app import decode_cursor, encode_cursor

from kestrel_api_server.testing import SSEClient, request


def mk_alert(ctx, i: int, severity: str = "high", rule: str = "r1", host: str = "h1", container: str | None = None,
             n_events: int = 2) -> Alert:
    now = time.time_ns()
    fields = {"host__name": host, "process__name": f"p{i}", "event__action": "exec"}
    if container:
        fields["container__id"] = container
    events = [make_event(ctx, "process", now - (n_events - k) * 10**6, k + 1, **fields) for k in range(n_events)]
    return Alert(rule_id=rule, rule_name=f"rule {rule}", severity=severity, description=f"alert {i}", events=events,
                 fields={"process.name": [f"p{i}"] * n_events}, ts_wall_ns=now, ts_mono_ns=now)


def get(sink, path, **kw):
    return request(sink.url, "GET", path, **kw)


# ------------------------------------------------------------------ REST


def test_list_filters_and_cursor_pages(open_api):
    ctx = make_context()
    sink = open_api(ctx)
    for i in range(25):
        sink.write_alert(mk_alert(ctx, i, severity=("high", "low")[i % 2], rule=f"r{i % 3}", host=f"h{i % 4}",
                                  container="c9" if i == 5 else None))
    status, _, body = get(sink, "/api/alerts?limit=10")
    assert status == 200 and [a["id"] for a in body["alerts"]] == list(range(25, 15, -1))
    assert body["last_seq"] == 25
    ids, cursor = [], None
    while True:
        status, _, body = get(sink, "/api/alerts?limit=10" + (f"&cursor={cursor}" if cursor else ""))
        ids += [a["id"] for a in body["alerts"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert ids == list(range(25, 0, -1))
    _, _, low = get(sink, "/api/alerts?severity=low&limit=100")
    assert len(low["alerts"]) == 12 and {a["severity"] for a in low["alerts"]} == {"low"}
    _, _, both = get(sink, "/api/alerts?severity=low,high&rule=r1&host=h1")
    assert both["alerts"] and all(a["rule"]["id"] == "r1" and a["host"] == "h1" for a in both["alerts"])
    _, _, cont = get(sink, "/api/alerts?container=c9")
    assert [a["id"] for a in cont["alerts"]] == [6]
    _, _, none = get(sink, "/api/alerts?start=2000-01-01T00:00:00Z&end=2000-01-02T00:00:00Z")
    assert none["alerts"] == []
    assert get(sink, "/api/alerts?cursor=garbage")[0] == 422
    assert get(sink, "/api/alerts?start=yesterday")[0] == 422
    assert get(sink, "/api/alerts?limit=0")[0] == 422
    assert decode_cursor(encode_cursor(42)) == 42


def test_detail_has_evidence_and_ack_keeps_a_note(open_api):
    ctx = make_context()
    sink = open_api(ctx)
    sink.write_alert(mk_alert(ctx, 1, container="c1", n_events=3))
    status, _, a = get(sink, "/api/alerts/1")
    assert status == 200
    assert a["rule"]["id"] == "r1" and a["description"] == "alert 1" and a["container"] == "c1"
    assert len(a["evidence"]) == 3
    assert [e["step"] for e in a["evidence"]] == [0, 1, 2]
    assert a["evidence"][0]["category"] == "process" and a["evidence"][0]["ts"].endswith("Z")
    assert a["fields"] == {"process.name": ["p1"] * 3}
    assert get(sink, "/api/alerts/99")[0] == 404
    status, _, acked = request(sink.url, "POST", "/api/alerts/1/ack", {"note": "known admin tool"})
    assert status == 200 and acked["ack"]["note"] == "known admin tool" and acked["ack"]["by"] == "127.0.0.1"
    assert get(sink, "/api/alerts/1")[2]["ack"]["note"] == "known admin tool"
    assert request(sink.url, "POST", "/api/alerts/99/ack", {"note": "x"})[0] == 404
    audit = get(sink, "/api/audit")[2]["audit"]
    assert audit[0]["action"] == "ack" and audit[0]["detail"] == {"alert": 1, "note": "known admin tool"}


def test_post_bodies_must_be_small_json(open_api):
    sink = open_api(max_body_bytes=256)
    sink.write_alert(mk_alert(sink.context, 1))
    status, _, body = request(sink.url, "POST", "/api/alerts/1/ack", raw=b"note=x",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415, body
    status, _, body = request(sink.url, "POST", "/api/alerts/1/ack", {"note": "x" * 1000})
    assert status == 413 and "256 bytes" in body["detail"]
    assert request(sink.url, "POST", "/api/alerts/1/ack", {"note": "ok"})[0] == 200


def test_overview_rules_health_and_openapi(open_api):
    ctx = make_context()
    sink = open_api(ctx)
    sink.write_events([make_event(ctx, "process", 1, 1)] * 50)
    for i, sev in enumerate(["high", "high", "critical"]):
        sink.write_alert(mk_alert(ctx, i, severity=sev, host=f"h{i % 2}", container="c1"))
    with ctx.stats.lock:
        ctx.stats.events_dropped[("jsonl", "malformed")] += 2
        ctx.stats.events_lost[("ebpf", "ring_full")] += 7
    status, _, ov = get(sink, "/api/overview?buckets=6")
    assert status == 200 and ov["total"] == 3
    assert {x["key"]: x["count"] for x in ov["by_severity"]} == {"high": 2, "critical": 1}
    assert {x["key"]: x["count"] for x in ov["by_host"]} == {"h0": 2, "h1": 1}
    assert ov["by_container"] == [{"key": "c1", "count": 3}]
    assert sum(sum(v) for v in ov["timeline"]["by_severity"].values()) == 3
    eng = ov["engine"]
    assert eng["events_per_s"] > 0 and eng["events_dropped"] == 2 and eng["events_lost"] == 7
    assert get(sink, "/api/overview?start=2030-01-01T00:00:00Z&end=2029-01-01T00:00:00Z")[0] == 422
    status, _, rules = get(sink, "/api/rules")
    assert status == 200 and rules == {"mode": "detect", "count": 0, "rules": []}  # no engine in this test
    status, _, health = get(sink, "/api/health")
    assert status == 200 and health["status"] == "ok" and health["store"]["alerts"] == 3
    status, _, spec = get(sink, "/api/openapi.json")
    assert status == 200
    assert {"/api/alerts", "/api/alerts/{alert_id}", "/api/alerts/{alert_id}/ack", "/api/overview", "/api/rules",
            "/api/health", "/api/stream", "/api/enforce"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    # the documented shapes are the real ones
    page = get(sink, "/api/alerts")[2]
    assert set(page) == set(schemas["AlertPage"]["properties"])
    assert set(page["alerts"][0]) == set(schemas["AlertSummary"]["properties"])
    assert set(get(sink, "/api/alerts/1")[2]) == set(schemas["AlertDetail"]["properties"])
    assert set(schemas["Envelope"]["properties"]) == {"type", "ts", "container", "payload"}


def test_console_assets_are_served_from_the_package(open_api):
    sink = open_api()
    status, headers, page = get(sink, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"/static/console.js" in page and b"http" not in page.replace(b'"http://www.w3.org', b"")
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        status, headers, body = get(sink, f"/static/{name}")
        assert status == 200 and headers["content-type"].startswith(kind) and body
        # nothing is fetched from elsewhere: no URL but the SVG namespace name, no CSS import or url()
        rest = body.replace(b"http://www.w3.org/2000/svg", b"")
        assert not re.search(rb"(https?:)?//[a-z0-9-]+(\.[a-z0-9-]+)+/|@import|url\(", rest), name
    assert get(sink, "/static/..%2Fstore.py")[0] == 404
    assert get(sink, "/static/nope.js")[0] == 404


# ------------------------------------------------------------------ SSE


def test_stream_envelope_live_alerts_and_heartbeats(open_api):
    ctx = make_context()
    sink = open_api(ctx, heartbeat_s=0.3)
    client = SSEClient(sink.url)
    try:
        assert client.status == 200
        ident, hello = client.next("heartbeat")
        assert ident is None and hello["payload"]["interval_s"] == 0.3
        sink.write_alert(mk_alert(ctx, 1, container="c7"))
        ident, msg = client.next("alert")
        assert ident == 1
        assert set(msg) == {"type", "ts", "container", "payload"}
        assert msg["container"] == "c7" and msg["ts"].endswith("Z") and msg["payload"]["id"] == 1
        t0 = time.monotonic()
        client.next("heartbeat", timeout=5)
        client.next("heartbeat", timeout=5)
        assert time.monotonic() - t0 < 3
    finally:
        client.close()


def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(open_api):
    ctx = make_context()
    sink = open_api(ctx)
    for i in range(10):
        sink.write_alert(mk_alert(ctx, i))
    first = SSEClient(sink.url, last_event_id=0)
    got = [i for i, _ in first.alerts(10)]
    assert got == list(range(1, 11))
    first.close()
    for i in range(10, 15):  # raised while no client listened
        sink.write_alert(mk_alert(ctx, i))
    again = SSEClient(sink.url, last_event_id=got[-1])
    try:
        sink.write_alert(mk_alert(ctx, 15))  # and one after the reconnect
        resumed = [i for i, _ in again.alerts(6)]
        assert resumed == list(range(11, 17))
        with pytest.raises(AssertionError):
            again.next("alert", timeout=0.5)  # nothing twice
    finally:
        again.close()
    live = SSEClient(sink.url)  # no Last-Event-ID: live from now
    try:
        sink.write_alert(mk_alert(ctx, 16))
        assert live.next("alert")[0] == 17
    finally:
        live.close()
    assert SSEClient(sink.url, last_event_id=None, token=None).status == 200
    bad = SSEClient(sink.url, path="/api/stream?types=nope")
    assert bad.status == 422


def test_many_clients_each_get_every_alert_once_in_order(open_api):
    ctx = make_context()
    sink = open_api(ctx)
    clients = [SSEClient(sink.url, last_event_id=0) for _ in range(5)]
    try:
        for i in range(300):
            sink.write_alert(mk_alert(ctx, i, n_events=1))
        for c in clients:
            assert [i for i, _ in c.alerts(300)] == list(range(1, 301))
    finally:
        for c in clients:
            c.close()


def test_event_stream_on_request(open_api):
    ctx = make_context()
    sink = open_api(ctx)
    client = SSEClient(sink.url, path="/api/stream?types=event")
    try:
        client.next("heartbeat")
        wait_for(sink.hub.wants_events, 5, "the subscription")
        sink.write_events([make_event(ctx, "process", 1, 1, process__name="sh", container__id="c3")])
        _, msg = client.next("event")
        assert msg["payload"]["process.name"] == "sh" and msg["container"] == "c3"
    finally:
        client.close()


# ------------------------------------------------------------------ security


def test_loopback_reads_are_open_but_enforce_needs_the_token(open_api, tmp_path):
    runtime = tmp_path / "run"
    sink = open_api(enforce_runtime_dir=str(runtime))
    token_file = tmp_path / "alerts.sqlite.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert sink.token == token and len(token) >= 32
    assert get(sink, "/api/alerts")[0] == 200
    status, headers, _ = request(sink.url, "POST", "/api/enforce", {"state": "off"})
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert request(sink.url, "POST", "/api/enforce", {"state": "off"},
                   headers={"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
    auth = {"Authorization": f"Bearer {token}"}
    assert request(sink.url, "POST", "/api/enforce", {"state": "maybe"}, headers=auth)[0] == 422
    status, _, body = request(sink.url, "POST", "/api/enforce", {"state": "off"}, headers=auth)
    assert status == 200 and body["state"] == "off", body
    assert (runtime / "enforce.state").read_text().strip() == "off"  # what `kestrel enforce off` writes
    request(sink.url, "POST", "/api/enforce", {"state": "on"}, headers=auth)
    assert (runtime / "enforce.state").read_text().strip() == "on"
    audit = [a for a in get(sink, "/api/audit")[2]["audit"] if a["action"] == "enforce"]
    assert [a["detail"]["state"] for a in audit] == ["on", "off"]
    assert all(a["detail"]["outcome"] == "applied" and a["actor"] == "127.0.0.1" for a in audit)
    # the token file is reused on the next start
    sink.close()
    again = open_api(enforce_runtime_dir=str(runtime))
    assert again.token == token


def test_auth_always_needs_the_token_for_reads(open_api):
    sink = open_api(auth="always", token="a-long-enough-token-123")
    assert get(sink, "/api/alerts")[0] == 401
    assert get(sink, "/api/stream")[0] == 401
    ok = {"Authorization": "Bearer a-long-enough-token-123"}
    assert get(sink, "/api/alerts", headers=ok)[0] == 200
    assert get(sink, "/")[0] == 200  # the page itself holds no data; it asks for the token
    c = SSEClient(sink.url, token="a-long-enough-token-123")
    try:
        assert c.status == 200 and c.next("heartbeat")
    finally:
        c.close()


def test_non_loopback_bind_without_token_refuses_to_start(tmp_path):
    sink = ApiSink(ApiSink.Settings(address="0.0.0.0:0", path=str(tmp_path / "a.sqlite")), make_context())
    with pytest.raises(ConfigError, match=r"address 0\.0\.0\.0:0 is not loopback, so the API needs a bearer token"):
        sink.open()
    assert not (tmp_path / "a.sqlite").exists()
    sink.close()


def test_non_loopback_bind_with_a_token_file_requires_it(open_api, tmp_path):
    token_file = tmp_path / "secret" / "api.token"
    token_file.parent.mkdir()
    sink = open_api(address="0.0.0.0:0", token_file=str(token_file))
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    port = sink.bound_address.rsplit(":", 1)[1]
    base = f"http://127.0.0.1:{port}"
    assert request(base, "GET", "/api/health")[0] == 401
    assert request(base, "GET", "/api/health", headers={"Authorization": f"Bearer {sink.token}"})[0] == 200


def test_token_file_readable_by_others_is_refused(open_api, tmp_path):
    bad = tmp_path / "t"
    bad.write_text("x" * 40)
    os.chmod(bad, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        open_api(token_file=str(bad))


def test_rate_limit(open_api):
    sink = open_api(rate_limit=0.5, rate_burst=3)
    codes = [get(sink, "/api/health")[0] for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]


def test_cors_is_closed_by_default_and_open_to_listed_origins(open_api):
    closed = open_api()
    status, headers, _ = get(closed, "/api/alerts", headers={"Origin": "http://evil.example"})
    assert status == 200 and "access-control-allow-origin" not in headers
    pre = request(closed.url, "OPTIONS", "/api/alerts/1/ack", headers={"Origin": "http://evil.example",
                                                                       "Access-Control-Request-Method": "POST"})
    assert pre[0] == 403
    opened = open_api(cors_origins=["http://console.example"], path=str(closed.store.path) + "2")
    status, headers, _ = get(opened, "/api/alerts", headers={"Origin": "http://console.example"})
    assert headers["access-control-allow-origin"] == "http://console.example"
    status, headers, _ = request(opened.url, "OPTIONS", "/api/alerts/1/ack",
                                 headers={"Origin": "http://console.example", "Access-Control-Request-Method": "POST"})
    assert status == 204 and "authorization" in headers["access-control-allow-headers"]


# ------------------------------------------------------------------ lifecycle and discovery


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as owner:
        owner.bind(("127.0.0.1", 0))
        owner.listen()
        address = "127.0.0.1:%d" % owner.getsockname()[1]
        sink = ApiSink(ApiSink.Settings(address=address, path=str(tmp_path / "a.sqlite")), make_context())
        with pytest.raises(OSError, match=rf"api sink: cannot listen on {address}"):
            sink.open()
    sink.close()


def test_settings_validation():
    with pytest.raises(ValueError, match="invalid address"):
        ApiSink.Settings(address="nohostport")
    with pytest.raises(ValueError, match="heartbeat_s must be positive"):
        ApiSink.Settings(heartbeat_s=0)
    with pytest.raises(ValueError):
        ApiSink.Settings(auth="sometimes")
    assert ApiSink.Settings().address == "127.0.0.1:8765"


def test_close_frees_the_port_and_ends_streams(open_api):
    ctx = make_context()
    sink = open_api(ctx)
    client = SSEClient(sink.url)
    client.next("heartbeat")
    address = sink.bound_address
    sink.close()
    assert client.ended.wait(10), "the stream did not end when the server stopped"
    sink.close()
    again = open_api(address=address)
    assert again.bound_address == address


def test_entry_point_registers_the_sink():
    import pluggy

    from kestrel_core import hookspecs

    (ep,) = [e for e in entry_points(group="kestrel.plugins") if e.name == "api-server"]
    assert ep.dist.metadata["Name"] == "kestrel-edr-api-server"
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(ep.load(), name=ep.name)
    pm.check_pending()
    registered: list[type] = []
    pm.hook.kestrel_register_sinks(register=registered.append)
    assert registered == [ApiSink] and issubclass(ApiSink, Sink) and ApiSink.PLUGIN_NAME == "api"
    assert ApiSink.probe().available


class TestApiSinkContract(SinkContract):
    @pytest.fixture
    def sink(self, tmp_path):
        return ApiSink(ApiSink.Settings(address="127.0.0.1:0", path=str(tmp_path / "c.sqlite")), make_context())



def test_group_commit_streams_and_lists_alerts_only_once_committed(open_api):
    ctx = make_context()
    sink = open_api(ctx, commit="flush")
    client = SSEClient(sink.url, last_event_id=0)
    try:
        client.next("heartbeat")
        for i in range(3):
            sink.write_alert(mk_alert(ctx, i))
        assert sink.store.pending == 3
        assert get(sink, "/api/alerts")[2]["alerts"] == []
        with pytest.raises(AssertionError):
            client.next("alert", timeout=0.3)
        sink.flush()
        assert [i for i, _ in client.alerts(3)] == [1, 2, 3]
        assert [a["id"] for a in get(sink, "/api/alerts")[2]["alerts"]] == [3, 2, 1]
        for i in range(600):  # past MAX_PENDING the sink commits without waiting for a flush
            sink.write_alert(mk_alert(ctx, i, n_events=1))
        assert sink.store.pending < 600
        assert client.alerts(512)[-1][0] == 515
    finally:
        client.close()


def test_loopback_server_refuses_foreign_host_names(open_api):
    sink = open_api()
    status, _, body = get(sink, "/api/alerts", headers={"Host": "attacker.example:8765"})
    assert status == 403 and "Host header" in body["detail"]
    for host in ("localhost:8765", "127.0.0.1", "[::1]:8765", "127.0.0.2:1"):
        assert get(sink, "/api/health", headers={"Host": host})[0] == 200, host
    tokened = open_api(auth="always", token="a-long-enough-token-123", path=str(sink.store.path) + "2")
    ok = {"Authorization": "Bearer a-long-enough-token-123", "Host": "kestrel.example"}
    assert get(tokened, "/api/health", headers=ok)[0] == 200  # with a token, any name


def test_chunked_body_past_the_limit_is_refused(open_api):
    import http.client

    sink = open_api(max_body_bytes=100)
    sink.write_alert(mk_alert(sink.context, 1))
    conn = http.client.HTTPConnection("127.0.0.1", int(sink.bound_address.rsplit(":", 1)[1]), timeout=10)
    chunks = [b'{"note": "'] + [b"x" * 50] * 20 + [b'"}']
    conn.request("POST", "/api/alerts/1/ack", body=iter(chunks), headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and b"larger than 100 bytes" in resp.read()
    conn.close()
    assert get(sink, "/api/alerts/1")[2]["ack"] is None


def test_resume_from_an_id_this_store_never_had_starts_over(open_api):
    ctx = make_context()
    sink = open_api(ctx)
    for i in range(3):
        sink.write_alert(mk_alert(ctx, i))
    client = SSEClient(sink.url, last_event_id=500)  # e.g. the store file was replaced
    try:
        _, hello = client.next("heartbeat")
        assert hello["payload"]["reset"] is True
        assert [i for i, _ in client.alerts(3)] == [1, 2, 3]
    finally:
        client.close()


@pytest.mark.parametrize("method, path, body, headers", [
    ("GET", "/api/alerts/99999999999999999999999", None, {}),
    ("GET", "/api/alerts/-1", None, {}),
    ("GET", "/api/alerts/abc", None, {}),
    ("GET", "/api/alerts?limit=abc", None, {}),
    ("GET", "/api/alerts?limit=100000", None, {}),
    ("GET", "/api/alerts?start=99999999999999999999999", None, {}),
    ("GET", "/api/alerts?start=9999-99-99", None, {}),
    ("GET", "/api/alerts?cursor=czk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5", None, {}),
    ("GET", "/api/alerts?cursor=%F0%9F%92%A9", None, {}),
    ("GET", "/api/overview?buckets=0", None, {}),
    ("GET", "/api/overview?start=5&end=5", None, {}),
    ("GET", "/api/stream?last_event_id=-3", None, {}),
    ("GET", "/api/stream", None, {"Last-Event-ID": "abc"}),
    ("POST", "/api/alerts/1/ack", b"{not json", {"Content-Type": "application/json"}),
    ("POST", "/api/alerts/1/ack", b'{"note": 5}', {"Content-Type": "application/json"}),
    ("POST", "/api/alerts/1/ack", b'[]', {"Content-Type": "application/json"}),
    ("POST", "/api/enforce", b'{"state": "off"}', {"Content-Type": "application/json"}),
    ("GET", "/static/../../etc/passwd", None, {}),
    ("GET", "/nope", None, {}),
    ("DELETE", "/api/alerts/1", b"{}", {"Content-Type": "application/json"}),
])
def test_bad_requests_get_a_4xx_never_a_500(open_api, method, path, body, headers):
    sink = open_api()
    sink.write_alert(mk_alert(sink.context, 1))
    status, _, payload = request(sink.url, method, path, raw=body, headers=headers)
    assert 400 <= status < 500, (status, payload)
    assert get(sink, "/api/health")[0] == 200
