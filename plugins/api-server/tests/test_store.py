"""The SQLite alert store on real files: migrations, WAL, queries, cursors,
retention, sequence numbers that are never reused."""

from __future__ import annotations

import sqlite3
import time

import pytest

from kestrel_api_server.store import (MIGRATIONS, SCHEMA_VERSION, AlertFilter, NewAlert, SqliteAlertStore,
                                      StoreError, migrate)


def alert(i: int, severity: str = "high", rule: str = "r1", host: str | None = "h1", container: str | None = None,
          ts_ns: int | None = None) -> NewAlert:
    return NewAlert(ts_ns=ts_ns if ts_ns is not None else time.time_ns(), rule_id=rule, rule_name=f"rule {rule}",
                    severity=severity, host=host, container=container, doc={"n": i, "events": [{"i": i}]})


@pytest.fixture
def store(tmp_path):
    s = SqliteAlertStore(str(tmp_path / "a.sqlite"))
    yield s
    s.close()


def test_fresh_store_is_wal_at_the_current_schema(tmp_path, store):
    conn = sqlite3.connect(tmp_path / "a.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == MIGRATIONS[-1][0]
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"alerts_ts", "alerts_severity", "alerts_rule", "alerts_host", "alerts_container"} <= indexes
    conn.close()


def test_a_version_1_file_is_migrated_and_keeps_its_alerts(tmp_path):
    path = str(tmp_path / "old.sqlite")
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, path, upto=1) == 0
    conn.execute("INSERT INTO alerts (ts_ns, stored_ns, rule_id, rule_name, severity, host, container, doc) "
                 "VALUES (1, 1, 'r', 'R', 'low', 'h', NULL, '{\"events\": []}')")
    conn.close()
    store = SqliteAlertStore(path)
    try:
        assert store.migrated_from == 1
        (old,) = store.query(AlertFilter(), 10)
        assert old["rule"]["id"] == "r" and old["ack"] is None
        assert store.ack(old["id"], "seen", "tester")["ack"]["note"] == "seen"  # a column migration 2 added
        assert store.add(alert(2))["seq"] == 2
    finally:
        store.close()


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this kestrel-edr-api-server understands"):
        SqliteAlertStore(str(path))


def test_filters_order_and_cursor(store):
    for i in range(30):
        store.add(alert(i, severity=("high", "low", "critical")[i % 3], rule=f"r{i % 2}",
                        host=f"h{i % 5}", container="c1" if i % 4 == 0 else None, ts_ns=1000 + i))
    everything = store.query(AlertFilter(), 100)
    assert [a["seq"] for a in everything] == list(range(30, 0, -1))
    high = store.query(AlertFilter(severities=("high",)), 100)
    assert {a["severity"] for a in high} == {"high"} and len(high) == 10
    two = store.query(AlertFilter(severities=("high", "critical")), 100)
    assert len(two) == 20
    combo = store.query(AlertFilter(rule="r1", host="h1"), 100)
    assert all(a["rule"]["id"] == "r1" and a["host"] == "h1" for a in combo) and combo
    assert all(a["container"] == "c1" for a in store.query(AlertFilter(container="c1"), 100))
    window = store.query(AlertFilter(start_ns=1010, end_ns=1015), 100)
    assert sorted(a["ts_ns"] for a in window) == list(range(1010, 1015))
    # pages of 7 by cursor: every alert once, in order
    seen, before = [], None
    while True:
        page = store.query(AlertFilter(before_seq=before), 7)
        if not page:
            break
        seen += [a["seq"] for a in page]
        before = page[-1]["seq"]
    assert seen == list(range(30, 0, -1))


def test_after_is_the_stream_replay(store):
    for i in range(5):
        store.add(alert(i))
    assert [a["seq"] for a in store.after(2, 10)] == [3, 4, 5]
    assert [a["seq"] for a in store.after(0, 2)] == [1, 2]
    assert store.after(5, 10) == []
    assert store.last_seq() == 5


def test_get_has_the_document_and_ack_is_audited(store):
    seq = store.add(alert(7))["seq"]
    got = store.get(seq)
    assert got["doc"] == {"n": 7, "events": [{"i": 7}]}
    assert store.get(999) is None
    acked = store.ack(seq, "benign: admin", "127.0.0.1")
    assert acked["ack"]["note"] == "benign: admin" and acked["ack"]["by"] == "127.0.0.1"
    assert store.ack(999, "x", "y") is None
    (entry,) = store.audit_log()
    assert entry["action"] == "ack" and entry["detail"] == {"alert": seq, "note": "benign: admin"}


def test_retention_by_count_keeps_the_newest_and_never_reuses_ids(tmp_path):
    store = SqliteAlertStore(str(tmp_path / "r.sqlite"), max_alerts=5)
    try:
        for i in range(12):
            store.add(alert(i))
        assert store.prune() == 7
        assert [a["seq"] for a in store.query(AlertFilter(), 100)] == [12, 11, 10, 9, 8]
        assert store.count() == 5
    finally:
        store.close()
    store = SqliteAlertStore(str(tmp_path / "r.sqlite"), max_alerts=5)
    try:
        assert store.last_seq() == 12
        assert store.add(alert(99))["seq"] == 13
    finally:
        store.close()


def test_retention_by_age(tmp_path):
    now = time.time_ns()
    store = SqliteAlertStore(str(tmp_path / "age.sqlite"), max_age_s=3600)
    try:
        store.add(alert(0, ts_ns=now - 7200 * 10**9))
        store.add(alert(1, ts_ns=now - 60 * 10**9))
        assert store.prune(now) == 1
        assert [a["doc"]["n"] for a in map(lambda a: store.get(a["seq"]), store.query(AlertFilter(), 10))] == [1]
    finally:
        store.close()


def test_overview_counts_and_buckets(store):
    base = 10**18
    for i, sev in enumerate(["high", "high", "low", "critical"]):
        store.add(alert(i, severity=sev, rule=f"r{i % 2}", host="h1" if i < 3 else "h2", ts_ns=base + i * 10))
    store.add(alert(9, ts_ns=base + 1000))  # outside the window
    ov = store.overview(base, base + 40, 4)
    assert ov["total"] == 4
    assert {x["key"]: x["count"] for x in ov["by_severity"]} == {"high": 2, "low": 1, "critical": 1}
    assert ov["by_host"][0] == {"key": "h1", "count": 3}
    assert ov["timeline"]["by_severity"]["high"] == [1, 1, 0, 0]
    assert ov["timeline"]["by_severity"]["critical"] == [0, 0, 0, 1]


def test_store_is_usable_from_many_threads(store):
    import threading

    errors = []

    def reader():
        try:
            for _ in range(50):
                store.query(AlertFilter(), 10)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(100):
        store.add(alert(i))
    for t in threads:
        t.join()
    assert not errors and store.count() == 100
