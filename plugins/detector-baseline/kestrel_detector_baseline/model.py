"""The behaviour tree and its JSON snapshot.

Per scope (a host, or a container on a host)::

    processes: {name: {count, children: {name: {count, args: {shape: n}}},
                       peers: {key: n}, paths: {prefix: n}}}

A snapshot is one JSON document holding every scope, written atomically
(temp file in the same directory, fsync, rename, fsync of the directory),
so a crash leaves the previous snapshot or the new one, never half of one.
Loading checks every value's type before use (:func:`parse_snapshot`): a
damaged or foreign file raises :class:`SnapshotError` naming the path and
what is wrong, and is never partly trusted.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import attrs
import orjson

FORMAT = 1
KINDS = ("children", "peers", "paths")


class SnapshotError(ValueError):
    """A snapshot that cannot be trusted; the message names the file and the problem."""


@attrs.define(eq=False)
class Scope:
    host: str
    container: str | None = None
    first_ts_ns: int | None = None
    """Event time (``@timestamp``) of the scope's first event: warm-up by duration counts from it."""
    last_ts_ns: int = 0
    events: int = 0
    """Events learned from (warm-up) plus events checked after it."""
    learned_events: int = 0
    learning: bool = True
    learned_until_ns: int | None = None
    """Event time at which warm-up ended (None while learning)."""
    nodes: int = 0
    capped: int = 0
    """Nodes not added because the scope reached ``max_nodes_per_scope``."""
    processes: dict[str, dict[str, Any]] = attrs.Factory(dict)

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.host, self.container)

    def label(self) -> str:
        return self.host if self.container is None else f"{self.host} container {self.container}"

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "container": self.container, "first_ts_ns": self.first_ts_ns,
                "last_ts_ns": self.last_ts_ns, "events": self.events, "learned_events": self.learned_events,
                "learning": self.learning, "learned_until_ns": self.learned_until_ns, "nodes": self.nodes,
                "capped": self.capped, "processes": self.processes}


def new_process() -> dict[str, Any]:
    return {"count": 0, "children": {}, "peers": {}, "paths": {}}


# --------------------------------------------------------------------------- snapshot files


def snapshot_bytes(scopes: dict[tuple[str, str | None], Scope], shape: dict[str, Any],
                   counters: dict[str, int]) -> bytes:
    """The snapshot document: sorted keys and scopes, so the same state gives the same bytes."""
    ordered = [scopes[k].to_json() for k in sorted(scopes, key=lambda k: (k[0], k[1] or ""))]
    doc = {"kestrel_baseline": FORMAT, "shape": shape, "counters": dict(sorted(counters.items())), "scopes": ordered}
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once: temp file beside it, fsync, rename, fsync the directory."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _counts(where: str, v: Any) -> dict[str, int]:
    if not isinstance(v, dict) or not all(isinstance(k, str) and _int(n) for k, n in v.items()):
        raise SnapshotError(f"{where} must map names to non-negative counts")
    return v


def parse_snapshot(path: str | Path, data: bytes) -> tuple[list[Scope], dict[str, Any], dict[str, int]]:
    """(scopes, shape settings, counters) of a snapshot; every value's type is
    checked.  Raises :class:`SnapshotError` naming ``path``."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"{path}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or "kestrel_baseline" not in doc:
        raise SnapshotError(f"{path}: not a Kestrel baseline snapshot (no 'kestrel_baseline' key)")
    if doc["kestrel_baseline"] != FORMAT:
        raise SnapshotError(f"{path}: snapshot format {doc['kestrel_baseline']!r}, this plugin reads {FORMAT}")
    shape, counters, raw_scopes = doc.get("shape"), doc.get("counters", {}), doc.get("scopes")
    if not isinstance(shape, dict):
        raise SnapshotError(f"{path}: 'shape' must be a table")
    _counts(f"{path}: 'counters'", counters)
    if not isinstance(raw_scopes, list):
        raise SnapshotError(f"{path}: 'scopes' must be a list")
    scopes = []
    seen = set()
    for i, raw in enumerate(raw_scopes):
        where = f"{path}: scope #{i + 1}"
        if not isinstance(raw, dict):
            raise SnapshotError(f"{where} must be a table")
        host, container = raw.get("host"), raw.get("container")
        if not isinstance(host, str) or not (container is None or isinstance(container, str)):
            raise SnapshotError(f"{where}: 'host' must be a string and 'container' a string or null")
        where = f"{path}: scope {host!r}" + (f" container {container!r}" if container else "")
        if (host, container) in seen:
            raise SnapshotError(f"{where} appears twice")
        seen.add((host, container))
        for key in ("last_ts_ns", "events", "learned_events", "nodes", "capped"):
            if not _int(raw.get(key)):
                raise SnapshotError(f"{where}: {key!r} must be a non-negative integer, not {raw.get(key)!r}")
        for key in ("first_ts_ns", "learned_until_ns"):
            if raw.get(key) is not None and not _int(raw.get(key)):
                raise SnapshotError(f"{where}: {key!r} must be a non-negative integer or null")
        if not isinstance(raw.get("learning"), bool):
            raise SnapshotError(f"{where}: 'learning' must be true or false")
        procs = raw.get("processes")
        if not isinstance(procs, dict):
            raise SnapshotError(f"{where}: 'processes' must be a table")
        nodes = 0
        for name, node in procs.items():
            pwhere = f"{where} process {name!r}"
            if not isinstance(node, dict) or set(node) != {"count", *KINDS} or not _int(node["count"]):
                raise SnapshotError(f"{pwhere}: must have exactly count, children, peers, paths")
            children = node["children"]
            if not isinstance(children, dict):
                raise SnapshotError(f"{pwhere}: 'children' must be a table")
            for cname, child in children.items():
                if not isinstance(child, dict) or set(child) != {"count", "args"} or not _int(child["count"]):
                    raise SnapshotError(f"{pwhere} child {cname!r}: must have exactly count and args")
                nodes += 1 + len(_counts(f"{pwhere} child {cname!r} args", child["args"]))
            nodes += 1 + len(_counts(f"{pwhere} peers", node["peers"])) + len(_counts(f"{pwhere} paths",
                                                                                       node["paths"]))
        if nodes != raw["nodes"]:
            raise SnapshotError(f"{where}: says {raw['nodes']} nodes, holds {nodes}")
        scopes.append(Scope(host=host, container=container, first_ts_ns=raw.get("first_ts_ns"),
                            last_ts_ns=raw["last_ts_ns"], events=raw["events"], learned_events=raw["learned_events"],
                            learning=raw["learning"], learned_until_ns=raw.get("learned_until_ns"), nodes=nodes,
                            capped=raw["capped"], processes=procs))
    return scopes, shape, counters


def read_snapshot(path: str | Path) -> tuple[list[Scope], dict[str, Any], dict[str, int]]:
    """:func:`parse_snapshot` of a file (OSError for one that cannot be read)."""
    return parse_snapshot(path, Path(path).read_bytes())


# --------------------------------------------------------------------------- diff


def diff_scopes(a: list[Scope], b: list[Scope]) -> list[str]:
    """What B learned that A did not (``+``) and the reverse (``-``), per scope
    and process; counts are B's (``+``) or A's (``-``).  Empty: same behaviour."""
    amap = {s.key: s for s in a}
    bmap = {s.key: s for s in b}
    out: list[str] = []
    for key in sorted(set(amap) | set(bmap), key=lambda k: (k[0], k[1] or "")):
        sa, sb = amap.get(key), bmap.get(key)
        label = (sa or sb).label()  # type: ignore[union-attr]
        if sa is None:
            out.append(f"+ scope {label} ({sb.nodes} nodes)")  # type: ignore[union-attr]
            continue
        if sb is None:
            out.append(f"- scope {label} ({sa.nodes} nodes)")
            continue
        lines: list[str] = []
        for pname in sorted(set(sa.processes) | set(sb.processes)):
            pa, pb = sa.processes.get(pname), sb.processes.get(pname)
            if pa is None:
                lines.append(f"  + process {pname} ({pb['count']})")  # type: ignore[index]
                continue
            if pb is None:
                lines.append(f"  - process {pname} ({pa['count']})")
                continue
            for kind in KINDS:
                ka, kb = pa[kind], pb[kind]
                for item in sorted(set(kb) - set(ka)):
                    n = kb[item]["count"] if kind == "children" else kb[item]
                    lines.append(f"  + {pname} {kind[:-1] if kind != 'children' else 'child'} {item} ({n})")
                for item in sorted(set(ka) - set(kb)):
                    n = ka[item]["count"] if kind == "children" else ka[item]
                    lines.append(f"  - {pname} {kind[:-1] if kind != 'children' else 'child'} {item} ({n})")
                if kind == "children":
                    for item in sorted(set(ka) & set(kb)):
                        for shape in sorted(set(kb[item]["args"]) - set(ka[item]["args"])):
                            lines.append(f"  + {pname} child {item} args {shape!r} ({kb[item]['args'][shape]})")
                        for shape in sorted(set(ka[item]["args"]) - set(kb[item]["args"])):
                            lines.append(f"  - {pname} child {item} args {shape!r} ({ka[item]['args'][shape]})")
        if lines:
            out.append(f"scope {label}:")
            out.extend(lines)
    return out
