"""Matcher conformance kit: every matcher (built in or a plugin's) must give
the alerts of plain category dispatch.

``MatcherConformance`` is a base class for a plugin's tests: subclass it, set
``MATCHER`` to the matcher's name, and optionally override
``make_matcher()``.  Its tests check

* the *superset* property directly: on generated rule sets and streams, every
  event on which a predicate is true is among the matcher's candidates for it;
* identical alerts, in order, to category dispatch (``CategoryMatcher``) over
  generated rule sets and streams (single events and sequences, every
  literal-bearing operator, case variants and the characters whose case
  folding differs between ``str.lower`` and ``re.IGNORECASE``);
* the EQL conformance corpus through ``kestrel eval --matcher NAME``, and
  the differential suite against the ``eql`` package the same way;
* the Linux pack's golden tests with the matcher;
* the demo replay, byte-identical to the default matcher's output.

The generator (``gen_rules``, ``gen_events``) is public for plugins' own tests.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

from .testing import _CorpusKit, kestrel_root


NAMES = ["bash", "BASH", "sh", "curl", "Curl", "wget", "nc", "ncat", "python3", "perl", "ſh", "baſh",
         "İd", "id", "ıd", "\u212aill", "kill", "socat", "busybox", "crontab"]
PATHS = ["/usr/bin/curl", "/tmp/x.sh", "/tmp/.hidden/run", "/dev/shm/a", "/etc/passwd", "/etc/shadow",
         "/home/u/.ssh/id_rsa", "/HOME/U/.SSH/ID_RSA", "/usr/lib/libc.so", "/var/tmp/kit.py", "/bin/sh",
         "/opt/app/ſtart", "/tmp/İnst"]
ARGS = ["-c", "-e", "--help", "http://evil.example/x", "HTTP://EVIL.EXAMPLE/Y", "/dev/tcp/1.2.3.4/80", "-i",
        "base64", "-d", "İ"]
ACTIONS = ["exec", "open", "connect", "end", "rename"]
CATS = ["process", "file", "network"]


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pick(r: random.Random, pool: list[str]) -> str:
    s = r.choice(pool)
    if r.random() < 0.2:
        s = "".join(c.upper() if r.random() < 0.5 else c for c in s)
    return s


def _frag(r: random.Random, s: str) -> str:
    if len(s) < 3:
        return s
    a = r.randrange(0, len(s) - 2)
    b = r.randrange(a + 3, len(s) + 1)
    return s[a:b]


def leaf(r: random.Random) -> str:
    field, pool = r.choice([("process.name", NAMES), ("process.executable", PATHS), ("file.path", PATHS),
                            ("process.args", ARGS), ("process.command_line", ARGS + PATHS)])
    s = _pick(r, pool)
    k = r.randrange(17)
    if k == 0:
        return f"{field} == {_q(s)}"
    if k == 1:
        return f"{field} : {_q(s)}"
    if k == 2:
        return f"{field} in ({', '.join(_q(_pick(r, pool)) for _ in range(r.randrange(1, 5)))})"
    if k == 3:
        return f"{field} in~ ({', '.join(_q(_pick(r, pool)) for _ in range(r.randrange(1, 4)))})"
    if k == 4:
        return f"{field} : {_q(s[: r.randrange(1, len(s) + 1)] + '*')}"
    if k == 5:
        return f"{field} like~ {_q('*' + _frag(r, s) + '*')}"
    if k == 6:
        return f"{field} like {_q('*' + s[-r.randrange(1, len(s) + 1):])}"
    if k == 7:
        f = _frag(r, s)
        return f"{field} : {_q(f[0] + '?' + f[1:] + '*') if len(f) > 1 else _q(f)}"
    if k == 8:
        return f"{field} regex {_q('.*' + _frag(r, s).replace('.', '[.]') + '.*')}"
    if k == 9:
        return f"{field} regex~ {_q(s[:3].replace('.', '[.]') + '.*')}"
    if k == 10:
        return f"startsWith{r.choice(['', '~'])}({field}, {_q(s[:r.randrange(1, len(s) + 1)])})"
    if k == 11:
        return f"endsWith{r.choice(['', '~'])}({field}, {_q(s[-r.randrange(1, len(s) + 1):])})"
    if k == 12:
        return f"stringContains{r.choice(['', '~'])}({field}, {_q(_frag(r, s))})"
    if k == 13:
        return f"not {field} : {_q(s)}"
    if k == 14:
        return f"process.pid {r.choice(['==', '>', '<', '!='])} {r.randrange(10)}"
    if k == 15:
        return f"{field} regex {_q('(' + '|'.join(_frag(r, _pick(r, pool)).replace('.', '[.]') for _ in range(2)) + ').*')}"
    return f"event.action == {_q(r.choice(ACTIONS))}"


def expr(r: random.Random, depth: int = 0) -> str:
    if depth >= 2 or r.random() < 0.4:
        return leaf(r)
    op = r.choice(["and", "or", "and"])
    return f"({expr(r, depth + 1)} {op} {expr(r, depth + 1)})"


def gen_rules(r: random.Random, n: int, sequences: bool = True) -> list[str]:
    out = []
    for _ in range(n):
        if sequences and r.random() < 0.2:
            steps = " ".join(f"[{r.choice(CATS)} where {expr(r, 1)}]" for _ in range(r.randrange(2, 4)))
            until = f" until [process where event.action == \"end\"]" if r.random() < 0.3 else ""
            out.append(f"sequence by process.pid with maxspan=5s {steps}{until}")
        else:
            out.append(f"{r.choice(CATS)} where {expr(r)}")
    return out


def gen_events(r: random.Random, n: int) -> list[tuple[str, int, dict]]:
    out = []
    t = 0
    for i in range(n):
        t += r.choice([1, 100_000_000, 700_000_000, 2_000_000_000])
        f: dict = {"process.pid": r.randrange(6), "event.action": r.choice(ACTIONS)}
        if r.random() < 0.9:
            f["process.name"] = _pick(r, NAMES)
        if r.random() < 0.8:
            f["process.executable"] = _pick(r, PATHS)
        if r.random() < 0.6:
            f["file.path"] = _pick(r, PATHS)
        if r.random() < 0.7:
            f["process.args"] = [_pick(r, ARGS) for _ in range(r.randrange(0, 4))]
        if r.random() < 0.5:
            f["process.command_line"] = " ".join(_pick(r, ARGS + PATHS) for _ in range(r.randrange(1, 4)))
        out.append((r.choice(CATS), t, f))
    return out


def to_events(schema: Any, raw: list[tuple[str, int, dict]]) -> list[Any]:
    """Events (ids from 1, in order) from ``gen_events`` output."""
    from .event import Event

    cat = schema.resolve("event.category")
    out = []
    for i, (c, t, f) in enumerate(raw, 1):
        fields = {schema.resolve(k): v for k, v in f.items()}
        fields[cat] = [c]
        out.append(Event(category=c, fields=fields, ts_mono_ns=t, ts_wall_ns=t, event_id=i, raw={"n": i}))
    return out


def run_engine(schema: Any, queries: list[str], events: list[Any], matcher: Any, batch: int = 97) -> tuple[list, Any]:
    """Alerts as ``(rule id, event ids)`` of ``queries`` over ``events`` with ``matcher`` (always used)."""
    from .eql.engine import DetectionEngine
    from .rules import Rule

    rules = [Rule(id=f"r{i}", name=f"r{i}", query=q) for i, q in enumerate(queries)]
    eng = DetectionEngine(schema, rules, matcher=matcher, strict="off", direct=False)
    assert not eng.rule_errors, [str(e) for e in eng.rule_errors[:3]]
    out = []
    for i in range(0, len(events), batch):
        out += eng.process_batch(events[i:i + batch])
    out += eng.flush()
    assert not eng.runtime_errors, eng.runtime_errors[:3]
    return [(a.rule_id, tuple(e.event_id for e in a.events)) for a in out], eng


class MatcherConformance(_CorpusKit):
    """Subclass in a matcher plugin's tests; set ``MATCHER`` (its name)."""

    MATCHER: str = ""
    KIND = "matcher"
    SEEDS = range(0, 40)
    RULES_PER_SET = 40
    EVENTS_PER_STREAM = 400
    MAX_REPORTED = 10

    def component(self) -> str:
        return self.MATCHER

    def make_matcher(self) -> Any:
        from .matchers import make_matcher

        return make_matcher(self.MATCHER)

    def test_matcher_is_available(self) -> None:
        from .matchers import find_matcher

        assert self.MATCHER, "set MATCHER to the matcher's name"
        assert find_matcher(self.MATCHER).PLUGIN_NAME == self.MATCHER

    def test_candidates_are_a_superset_of_the_truth(self) -> None:
        from .eql import ir
        from .eql.hostruntime import HostRuntime
        from .schema import Schema

        failures, checked = [], 0
        for seed in self.SEEDS:
            r = random.Random(seed)
            schema = Schema.ecs()
            queries = gen_rules(r, self.RULES_PER_SET, sequences=False)
            events = to_events(schema, gen_events(r, self.EVENTS_PER_STREAM))
            preds = []
            host = HostRuntime()
            for i, q in enumerate(queries):
                query = ir.compile_query(q, schema, strict="off")
                step = query.steps[0]
                preds.append((i, query, step.pred, step.category, host.compile(query.predicate(step), schema)))
            m = self.make_matcher()
            m.build([p[:4] for p in preds], schema)
            groups: dict[str, list[int]] = {}
            for j, e in enumerate(events):
                groups.setdefault(e.category, []).append(j)
            for cat, idxs in groups.items():
                evs = [events[j] for j in idxs]
                cands = {pid: (set(range(len(evs))) if pos is None else set(pos)) for pid, pos in m.candidates(cat, evs)}
                for pid, query, _root, pcat, pred in preds:
                    if pcat != cat:
                        continue
                    truth = set(pred.select_idx_nocat(evs))
                    checked += len(truth)
                    lost = truth - cands.get(pid, set())
                    if lost:
                        failures.append(f"seed {seed}: {queries[pid]}\n  dropped true events: "
                                        f"{[evs[j].event_id for j in sorted(lost)][:5]}")
        assert checked > 1000, "the generator should make predicates true on many events"
        self._failures("superset checks", failures, len(self.SEEDS))

    def test_alerts_equal_category_dispatch(self) -> None:
        from .eql.index import CategoryMatcher
        from .schema import Schema

        failures, total = [], 0
        for seed in self.SEEDS:
            r = random.Random(seed)
            queries = gen_rules(r, self.RULES_PER_SET)
            raw = gen_events(r, self.EVENTS_PER_STREAM)
            schema = Schema.ecs()
            events = to_events(schema, raw)
            plain, _ = run_engine(schema, queries, events, CategoryMatcher())
            schema2 = Schema.ecs()
            ours, _ = run_engine(schema2, queries, to_events(schema2, raw), self.make_matcher())
            total += len(plain)
            if ours != plain:
                a, b = set(plain), set(ours)
                bad = sorted({x[0] for x in a ^ b})
                failures.append(f"seed {seed}: missing {sorted(a - b)[:4]} extra {sorted(b - a)[:4]}\n  " +
                                "\n  ".join(queries[int(x[1:])] for x in bad[:3]))
        assert total > 5000, "generated rule sets should raise many alerts"
        self._failures("generated rule sets", failures, len(self.SEEDS))

    def test_linux_pack_golden_tests(self) -> None:
        from .packs import load_packs, run_rule_test

        ps = load_packs([kestrel_root() / "rules" / "linux"])
        assert ps.ok, [str(e) for e in ps.errors]
        outcomes = [run_rule_test(r, t, matcher=self.MATCHER) for r in ps.rules for t in r.tests]
        assert len(outcomes) >= 50
        failures = [f"{o.rule_id} / {o.test}: {o.detail}" for o in outcomes if not o.passed]
        self._failures("golden tests", failures, len(outcomes))

    def test_demo_replay_identical_to_default(self) -> None:
        from .replay import replay

        root = kestrel_root()
        log_path, pack = root / "demo" / "capture.klog", root / "rules" / "linux"
        default, ours = io.BytesIO(), io.BytesIO()
        replay([log_path], [pack], default)
        result = replay([log_path], [pack], ours, matcher=self.MATCHER)
        assert result.footer["counts"]["alerts"] >= 50
        assert ours.getvalue() == default.getvalue(), "replay output differs from the default matcher's"
