"""The ``ebpf`` normalizer.

The core ``ecs-json`` normalizer flattens and type-checks every value (~25 µs
an event).  The ebpf source builds its events itself, keyed by schema field
id with the right Python types (decode.py), so for those this normalizer only
stamps the source name; flat ``{ECS path: typed value}`` dicts (tests, tools)
are mapped path by path.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from kestrel_core.event import Event
from kestrel_core.interfaces import NormalizeError, Normalizer
from kestrel_core.schema import FieldType

EXTRA_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("network.type", FieldType.KEYWORD),
    ("user.target.id", FieldType.KEYWORD),
    ("group.target.id", FieldType.KEYWORD),
    ("target.process.pid", FieldType.LONG),
    ("target.process.name", FieldType.KEYWORD),
    ("file.group", FieldType.KEYWORD),
    ("process.Ext.exec_chain", FieldType.KEYWORD_LIST),
    ("process.args_truncated", FieldType.BOOLEAN),
    ("process.ptrace.request", FieldType.LONG),
    ("process.mmap.prot", FieldType.LONG),
    ("group.target.id", FieldType.KEYWORD),
    ("user.name", FieldType.KEYWORD),
    ("user.Ext.real.id", FieldType.KEYWORD),
    ("process.hash.sha256", FieldType.KEYWORD),
    ("process.env_vars", FieldType.KEYWORD_LIST),
    ("group.Ext.real.id", FieldType.KEYWORD),
    ("file.Ext.original.name", FieldType.KEYWORD),
    ("file.Ext.original.extension", FieldType.KEYWORD),
    ("group.name", FieldType.KEYWORD),
    ("process.thread.capabilities.effective", FieldType.KEYWORD_LIST),
    ("process.thread.capabilities.permitted", FieldType.KEYWORD_LIST),
    ("process.interactive", FieldType.BOOLEAN),
    ("process.tty.char_device.major", FieldType.LONG),
    ("process.tty.char_device.minor", FieldType.LONG),
    ("process.entry_leader.entry_meta.type", FieldType.KEYWORD),
    ("container.id", FieldType.KEYWORD),
    ("container.runtime", FieldType.KEYWORD),
    ("process.parent.user.id", FieldType.KEYWORD),
    ("process.parent.user.name", FieldType.KEYWORD),
    ("process.parent.group.id", FieldType.KEYWORD),
    ("process.parent.real_user.id", FieldType.KEYWORD),
    ("process.parent.real_group.id", FieldType.KEYWORD),
    ("process.parent.interactive", FieldType.BOOLEAN),
    # the identity set: effective, real and saved user and group of the process
    *((f"process.{who}{what}.{part}", FieldType.KEYWORD)
      for who in ("", "real_", "saved_") for what in ("user", "group") for part in ("id", "name")),
    # its process group, session and entry leaders
    *((f"process.{leader}.{part}", ftype)
      for leader in ("group_leader", "session_leader", "entry_leader")
      for part, ftype in (("pid", FieldType.LONG), ("entity_id", FieldType.KEYWORD), ("name", FieldType.KEYWORD),
                          ("executable", FieldType.KEYWORD), ("args", FieldType.KEYWORD_LIST),
                          ("args_count", FieldType.LONG))),
)


def declare_fields(schema: Any) -> None:
    for path, ftype in EXTRA_FIELDS:
        if path not in schema or not schema.get(path).declared:
            schema.declare(path, ftype)


@functools.lru_cache(maxsize=65536)
def entity_key(entity_id: str) -> int:
    # Same derivation as ecs-json, so a recording replayed through it keys alike.
    return int.from_bytes(hashlib.blake2b(entity_id.encode(), digest_size=16).digest(), "big")


class EbpfNormalizer(Normalizer):
    PLUGIN_NAME = "ebpf"
    DESCRIPTION = "flat typed ECS records of the ebpf source -> events"

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        self.schema = context.schema
        declare_fields(self.schema)
        self._ids: dict[str, int] = {}

    def normalize(self, record: Any, source_id: str) -> Event:
        if record.__class__ is Event:  # the source builds events keyed by field id already
            record.source_id = source_id
            return record
        try:
            ids = self._ids
            fields = {}
            for path, value in record.items():
                fid = ids.get(path)
                if fid is None:
                    fid = ids[path] = self.schema.resolve(path)
                fields[fid] = value
            ts = record["@timestamp"]
            return Event(record["event.category"][0], fields, ts, ts, entity_key=entity_key(record["process.entity_id"]),
                         source_id=source_id, raw=None)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise NormalizeError(f"ebpf record without a usable {exc}") from None
