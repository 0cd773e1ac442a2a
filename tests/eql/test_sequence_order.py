"""Order of sequence results across join keys (issue 13, item 3).

Elasticsearch's SequenceMatcher keeps completed sequences in a TreeSet ordered
by Sequence.compareTo, which compares the ordinal (timestamp, tiebreaker) of
the sequence's last match; the join key plays no part.  `kestrel eval` prints
them in that order (docs/eql-semantics.md, "Pipes and output order")."""

from __future__ import annotations

import json

from click.testing import CliRunner

from kestrel_core.eql.cli import eval_command


def _run(query: str, rows: list[dict], tmp_path) -> list[list[int]]:
    p = tmp_path / "ev.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(eval_command, [query, "--input", str(p), "--timestamp-format", "epoch_s"])
    assert res.exit_code == 0, res.output
    return [[e["id"] for e in json.loads(line)["events"] if e] for line in res.stdout.splitlines() if line.startswith("{")]


def test_sequences_of_different_keys_come_in_last_event_order(tmp_path):
    rows = [
        {"id": 1, "@timestamp": 1, "event": {"category": "process"}, "host": {"id": "a"}},
        {"id": 2, "@timestamp": 2, "event": {"category": "process"}, "host": {"id": "b"}},
        {"id": 3, "@timestamp": 3, "event": {"category": "file"}, "host": {"id": "b"}},
        {"id": 4, "@timestamp": 4, "event": {"category": "file"}, "host": {"id": "a"}},
    ]
    q = "sequence by host.id [process where true] [file where true]"
    # key a starts first but completes last
    assert _run(q, rows, tmp_path) == [[2, 3], [1, 4]]


def test_trailing_missing_step_orders_by_last_positive_event(tmp_path):
    rows = [
        {"id": 1, "@timestamp": 1, "event": {"category": "process"}, "host": {"id": "a"}},
        {"id": 2, "@timestamp": 2, "event": {"category": "process"}, "host": {"id": "b"}},
        {"id": 3, "@timestamp": 3, "event": {"category": "file"}, "host": {"id": "b"}},
        {"id": 4, "@timestamp": 4, "event": {"category": "file"}, "host": {"id": "a"}},
    ]
    q = "sequence by host.id with maxspan=10s [process where true] [file where true] ![network where true]"
    assert _run(q, rows, tmp_path) == [[2, 3], [1, 4]]
