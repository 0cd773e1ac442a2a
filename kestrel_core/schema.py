"""Schema registry: ECS field path <-> integer field id, with a value type.

Rules resolve field paths to ids once, when they load; the hot path reads
``event.fields[field_id]``.  Ids are dense small integers handed out in
registration order, so a registry built the same way (the ECS table below,
then fields in the order they are first seen) gives the same ids.

Schema policy (``SCHEMA_VERSION``): adding a field or a type to the ECS table is
a minor bump; renaming, retyping or removing one is a major bump, and a
removed field stays registered as ``deprecated`` for one major version so that
old logs and rules still resolve it.
"""

from __future__ import annotations

import enum
import ipaddress
import threading
from typing import Any, Iterable

import attrs

SCHEMA_VERSION = "1.1"
"""1.1: ``host.*`` fields added; ``event.action`` values are Elastic Defend's (:data:`VALUE_RENAMES`)."""

VALUE_RENAMES: dict[str, dict[str, str]] = {
    "event.action": {
        "exit": "end", "create": "creation", "unlink": "deletion",
        "connect": "connection_attempted", "accept": "connection_accepted",
        "setuid": "uid_change", "setreuid": "uid_change", "setresuid": "uid_change",
        "setgid": "gid_change", "setregid": "gid_change", "setresgid": "gid_change",
        "init_module": "load_module", "finit_module": "load_module",
    },
}
"""Values sources emitted before schema 1.1 -> the value they emit now (Elastic
Defend's, so published rules match).  A rule comparing a field with an old
value is compiled to match both, with a located warning: rules and logs
written for 1.0 keep working for one minor release."""
TIMESTAMP_ID = 0
"""Field id of ``@timestamp``: the first field of the ECS table, in every schema."""


class FieldType(enum.Enum):
    """Value types a field may hold.  Values are plain Python objects."""

    KEYWORD = "keyword"  # str, compared case-sensitively by ==
    LONG = "long"  # int
    DOUBLE = "double"  # float
    BOOLEAN = "boolean"  # bool
    IP = "ip"  # str in canonical form (ipaddress.ip_address(x).compressed)
    DATE = "date"  # int, nanoseconds since the epoch
    KEYWORD_LIST = "keyword[]"  # list[str]
    IP_LIST = "ip[]"  # list[str]
    ANY = "any"  # not declared: whatever the source gave (str, int, float, bool, list)

    @property
    def is_list(self) -> bool:
        return self in (FieldType.KEYWORD_LIST, FieldType.IP_LIST)

    @property
    def element(self) -> "FieldType":
        """Type of one element (the type itself for scalars)."""
        return {FieldType.KEYWORD_LIST: FieldType.KEYWORD, FieldType.IP_LIST: FieldType.IP}.get(self, self)

    @property
    def is_numeric(self) -> bool:
        return self in (FieldType.LONG, FieldType.DOUBLE, FieldType.DATE)

    @property
    def is_string(self) -> bool:
        return self.element in (FieldType.KEYWORD, FieldType.IP)


@attrs.frozen
class FieldDef:
    id: int
    path: str
    type: FieldType
    declared: bool = True  # False: registered on first sight, type unknown
    deprecated: bool = False


# ECS fields Kestrel's sources emit and rules commonly use.  Anything else a
# source sends is registered on first sight as FieldType.ANY.
ECS_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("@timestamp", FieldType.DATE),
    ("event.category", FieldType.KEYWORD_LIST),
    ("event.type", FieldType.KEYWORD_LIST),
    ("event.action", FieldType.KEYWORD),
    ("event.kind", FieldType.KEYWORD),
    ("event.outcome", FieldType.KEYWORD),
    ("event.dataset", FieldType.KEYWORD),
    ("event.module", FieldType.KEYWORD),
    ("event.sequence", FieldType.LONG),
    ("event.id", FieldType.KEYWORD),
    ("host.name", FieldType.KEYWORD),
    ("host.id", FieldType.KEYWORD),
    ("host.hostname", FieldType.KEYWORD),
    ("host.architecture", FieldType.KEYWORD),
    ("host.os.type", FieldType.KEYWORD),
    ("host.os.name", FieldType.KEYWORD),
    ("host.os.kernel", FieldType.KEYWORD),
    ("host.os.family", FieldType.KEYWORD),
    ("host.os.platform", FieldType.KEYWORD),
    ("host.os.version", FieldType.KEYWORD),
    ("host.os.full", FieldType.KEYWORD),
    ("agent.id", FieldType.KEYWORD),
    ("agent.type", FieldType.KEYWORD),
    ("container.id", FieldType.KEYWORD),
    ("container.name", FieldType.KEYWORD),
    ("process.pid", FieldType.LONG),
    ("process.entity_id", FieldType.KEYWORD),
    ("process.name", FieldType.KEYWORD),
    ("process.executable", FieldType.KEYWORD),
    ("process.command_line", FieldType.KEYWORD),
    ("process.args", FieldType.KEYWORD_LIST),
    ("process.args_count", FieldType.LONG),
    ("process.working_directory", FieldType.KEYWORD),
    ("process.start", FieldType.DATE),
    ("process.exit_code", FieldType.LONG),
    ("process.session_leader.pid", FieldType.LONG),
    ("process.session_leader.name", FieldType.KEYWORD),
    ("process.group_leader.pid", FieldType.LONG),
    ("process.group_leader.name", FieldType.KEYWORD),
    ("process.parent.pid", FieldType.LONG),
    ("process.parent.entity_id", FieldType.KEYWORD),
    ("process.parent.name", FieldType.KEYWORD),
    ("process.parent.executable", FieldType.KEYWORD),
    ("process.parent.command_line", FieldType.KEYWORD),
    ("process.parent.user.id", FieldType.KEYWORD),
    ("process.parent.args", FieldType.KEYWORD_LIST),
    ("process.parent.args_count", FieldType.LONG),
    ("process.user.id", FieldType.KEYWORD),
    ("process.user.name", FieldType.KEYWORD),
    ("process.hash.sha256", FieldType.KEYWORD),
    ("user.id", FieldType.KEYWORD),
    ("user.name", FieldType.KEYWORD),
    ("user.effective.id", FieldType.KEYWORD),
    ("user.effective.name", FieldType.KEYWORD),
    ("group.id", FieldType.KEYWORD),
    ("group.name", FieldType.KEYWORD),
    ("user.Ext.real.id", FieldType.KEYWORD),
    ("group.Ext.real.id", FieldType.KEYWORD),
    ("file.path", FieldType.KEYWORD),
    ("file.name", FieldType.KEYWORD),
    ("file.extension", FieldType.KEYWORD),
    ("file.directory", FieldType.KEYWORD),
    ("file.size", FieldType.LONG),
    ("file.inode", FieldType.KEYWORD),
    ("file.mode", FieldType.KEYWORD),
    ("file.owner", FieldType.KEYWORD),
    ("file.target_path", FieldType.KEYWORD),
    ("file.Ext.original.path", FieldType.KEYWORD),
    ("source.ip", FieldType.IP),
    ("source.port", FieldType.LONG),
    ("source.address", FieldType.KEYWORD),
    ("destination.ip", FieldType.IP),
    ("destination.port", FieldType.LONG),
    ("destination.address", FieldType.KEYWORD),
    ("destination.domain", FieldType.KEYWORD),
    ("network.transport", FieldType.KEYWORD),
    ("network.protocol", FieldType.KEYWORD),
    ("network.direction", FieldType.KEYWORD),
    ("network.bytes", FieldType.LONG),
    ("dns.question.name", FieldType.KEYWORD),
    ("dns.question.type", FieldType.KEYWORD),
    ("url.full", FieldType.KEYWORD),
    ("url.domain", FieldType.KEYWORD),
)


class UnknownFieldError(KeyError):
    pass


class Schema:
    """Field registry.  Lookups are lock-free; registering a new path takes a
    lock, because sources normalize (and meet new fields) on their own threads."""

    version = SCHEMA_VERSION

    def __init__(self, fields: Iterable[tuple[str, FieldType]] = ()) -> None:
        self._by_path: dict[str, FieldDef] = {}
        self._by_id: list[FieldDef] = []
        self._lock = threading.Lock()
        for path, ftype in fields:
            self.declare(path, ftype)

    @classmethod
    def ecs(cls) -> "Schema":
        """A registry preloaded with Kestrel's ECS table."""
        return cls(ECS_FIELDS)

    def declare(self, path: str, ftype: FieldType, *, deprecated: bool = False) -> FieldDef:
        """Register ``path`` with a known type (a plugin adding its fields)."""
        with self._lock:
            return self._declare(path, ftype, deprecated)

    def _declare(self, path: str, ftype: FieldType, deprecated: bool) -> FieldDef:
        existing = self._by_path.get(path)
        if existing is not None:
            if existing.declared and existing.type is not ftype:
                raise ValueError(f"field {path!r} is already declared as {existing.type.value}, not {ftype.value}")
            fdef = attrs.evolve(existing, type=ftype, declared=True, deprecated=deprecated)
        else:
            fdef = FieldDef(len(self._by_id), path, ftype, True, deprecated)
            self._by_id.append(fdef)
        self._by_path[path] = fdef
        self._by_id[fdef.id] = fdef
        return fdef

    def resolve(self, path: str, *, create: bool = True) -> int:
        """Field id of ``path``; unknown paths are registered as ANY unless
        ``create`` is false, in which case UnknownFieldError is raised."""
        fdef = self._by_path.get(path)
        if fdef is not None:
            return fdef.id
        if not create:
            raise UnknownFieldError(path)
        with self._lock:
            fdef = self._by_path.get(path)
            if fdef is None:
                fdef = FieldDef(len(self._by_id), path, FieldType.ANY, declared=False)
                self._by_id.append(fdef)
                self._by_path[path] = fdef
            return fdef.id

    def get(self, path: str) -> FieldDef | None:
        return self._by_path.get(path)

    def field(self, field_id: int) -> FieldDef:
        return self._by_id[field_id]

    def path(self, field_id: int) -> str:
        return self._by_id[field_id].path

    def __contains__(self, path: str) -> bool:
        return path in self._by_path

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):
        return iter(self._by_id)


def coerce(value: Any, ftype: FieldType) -> Any:
    """Convert a raw JSON value to the field's type; raises ValueError with a
    short reason when it cannot.  ANY keeps the value as it is."""
    if value is None or ftype is FieldType.ANY:
        return value
    if ftype.is_list:
        items = value if isinstance(value, list) else [value]
        return [coerce(v, ftype.element) for v in items]
    if ftype is FieldType.KEYWORD:
        if isinstance(value, (dict, list)):
            raise ValueError(f"expected a string, got {type(value).__name__}")
        return value if isinstance(value, str) else (str(value).lower() if isinstance(value, bool) else str(value))
    if ftype is FieldType.DATE:
        from .timestamps import parse_timestamp

        return parse_timestamp(value)
    if ftype is FieldType.LONG:
        if isinstance(value, bool):
            raise ValueError("expected an integer, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value, 10)
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {value!r}")
    if ftype is FieldType.DOUBLE:
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    if ftype is FieldType.BOOLEAN:
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise ValueError(f"expected a boolean, got {value!r}")
    if ftype is FieldType.IP:
        try:
            return ipaddress.ip_address(value).compressed
        except ValueError:
            raise ValueError(f"expected an IP address, got {value!r}") from None
    raise AssertionError(ftype)
