"""Run a query through the PyPI `eql` package (1.0.1) as a differential oracle.

Only the public API is used: eql.parse_query under the parser's
`elasticsearch_syntax` config, eql.PythonEngine, engine.add_output_hook,
engine.add_query, engine.stream_events (which finalizes).  Events are fed as
eql.Event(type, time, data): `type` is the event category, `time` the timestamp
in milliseconds.  The engine is configured with time_unit=1000 (ticks per
second), so whole-second maxspans convert exactly (eql truncates maxspan to whole
seconds before scaling: do not use sub-second maxspans here).
"""
from __future__ import annotations

from typing import Iterable


def eql_matches(query: str, events: Iterable[dict], category_field: str = "category",
                time_field: str = "ts_ms", id_field: str = "id") -> list[tuple]:
    import eql  # noqa: PLC0415
    from eql.parser import allow_runs, elasticsearch_syntax  # noqa: PLC0415

    with elasticsearch_syntax, allow_runs:
        parsed = eql.parse_query(query)
    engine = eql.PythonEngine({"time_unit": 1000})
    out: list[tuple] = []
    engine.add_output_hook(lambda result: out.append(tuple(e.data[id_field] for e in result.events)))
    engine.add_query(parsed)
    ordered = sorted(events, key=lambda ev: ev[time_field])  # stable, like kestrel eval
    engine.stream_events([eql.Event(ev[category_field], ev[time_field], ev) for ev in ordered])
    return sorted(out)
