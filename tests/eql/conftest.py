from __future__ import annotations

import itertools
from typing import Any

import pytest

from kestrel_core.event import Event
from kestrel_core.normalize import flatten
from kestrel_core.schema import FieldType, Schema, coerce

_ids = itertools.count(1)
SECOND = 10**9


def make_event(schema: Schema, category: str = "process", ts: int = 0, **fields: Any) -> Event:
    """An event from dotted-or-nested fields (``process__name`` spells ``process.name``)."""
    doc: dict[str, Any] = {}
    for k, v in fields.items():
        doc[k.replace("__", ".")] = v
    flat = flatten(doc)
    out: dict[int, Any] = {}
    for path, value in flat.items():
        fid = schema.resolve(path)
        ft = schema.field(fid).type
        out[fid] = value if ft is FieldType.ANY or value is None else coerce(value, ft)
    cat_fid = schema.resolve("event.category")
    out.setdefault(cat_fid, [category])
    return Event(category=category, fields=out, ts_mono_ns=ts, ts_wall_ns=ts, event_id=next(_ids), raw=dict(doc))


@pytest.fixture
def schema() -> Schema:
    return Schema.ecs()


@pytest.fixture
def ev(schema):
    """ev(category="process", ts=0, **fields) -> Event"""

    def factory(category: str = "process", ts: int = 0, **fields: Any) -> Event:
        return make_event(schema, category, ts, **fields)

    return factory


@pytest.fixture
def E(schema):
    """E(n, category="x", t=n, **fields): event number n (``raw["n"]``) at t seconds."""

    def factory(n: int, category: str = "x", t: float | None = None, *, ns: int | None = None, **fields: Any) -> Event:
        ts = ns if ns is not None else int((t if t is not None else n) * SECOND)
        return make_event(schema, category, ts, n=n, **fields)

    return factory
