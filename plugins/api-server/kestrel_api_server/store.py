"""The durable alert store behind the API.

:class:`AlertStore` is the interface the sink and the HTTP app use;
:class:`SqliteAlertStore` is the default (one SQLite file in WAL mode).  A
server database would be a second subclass, selected by the sink's
``store`` setting.

Every alert gets a sequence number (``seq``, SQLite ``AUTOINCREMENT``: strictly
increasing and never reused, even after retention deleted older rows).  It is
the alert's id in the API and the SSE ``id:``, so a client that resumes with
``Last-Event-ID: N`` is sent exactly the alerts with ``seq > N``.

Durability: :meth:`AlertStore.add` returns after the row is committed.  With
``synchronous = "full"`` (the default) the commit is fsynced, so an alert the
sink acknowledged survives a crash of the process and of the machine; with
``"normal"`` it survives a crash of the process (SIGKILL) but the last
commits may be lost on power failure (SQLite's WAL semantics).

Schema versions live in ``PRAGMA user_version``; :data:`MIGRATIONS` are
applied in order, each in its own transaction, when a store opens.  A file
written by a newer version is refused rather than guessed at.
"""

from __future__ import annotations

import abc
import json
import os
import sqlite3
import threading
import time
from typing import Any, Iterable, Sequence

import attrs

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
        CREATE TABLE alerts (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            ts_ns      INTEGER NOT NULL,
            stored_ns  INTEGER NOT NULL,
            rule_id    TEXT NOT NULL,
            rule_name  TEXT NOT NULL,
            severity   TEXT NOT NULL,
            host       TEXT,
            container  TEXT,
            doc        TEXT NOT NULL
        );
        CREATE INDEX alerts_ts ON alerts(ts_ns);
        CREATE INDEX alerts_severity ON alerts(severity, seq);
        CREATE INDEX alerts_rule ON alerts(rule_id, seq);
        CREATE INDEX alerts_host ON alerts(host, seq);
        CREATE INDEX alerts_container ON alerts(container, seq);
    """),
    (2, """
        ALTER TABLE alerts ADD COLUMN acked_ns INTEGER;
        ALTER TABLE alerts ADD COLUMN ack_note TEXT;
        ALTER TABLE alerts ADD COLUMN ack_by TEXT;
        CREATE TABLE audit (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            ts_ns   INTEGER NOT NULL,
            action  TEXT NOT NULL,
            actor   TEXT NOT NULL,
            detail  TEXT NOT NULL
        );
    """),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


class StoreError(RuntimeError):
    """The store cannot be opened or used (message names the file and the cause)."""


@attrs.frozen
class NewAlert:
    """What the sink hands the store for one alert."""

    ts_ns: int
    rule_id: str
    rule_name: str
    severity: str
    host: str | None
    container: str | None
    doc: dict[str, Any]


@attrs.frozen
class AlertFilter:
    start_ns: int | None = None
    end_ns: int | None = None
    severities: tuple[str, ...] = ()
    rule: str | None = None
    host: str | None = None
    container: str | None = None
    before_seq: int | None = None
    """Cursor: only alerts older (smaller ``seq``) than this one."""


class AlertStore(abc.ABC):
    """Where alerts are kept.  ``add`` may be called from the engine thread
    while the other methods are called from the HTTP server's threads."""

    @abc.abstractmethod
    def add(self, alert: NewAlert, commit: bool = True) -> dict[str, Any]:
        """Store one alert; return its summary (with ``id``/``seq``).  With
        ``commit`` it is durable when this returns; without, at the next
        :meth:`commit` (group commit: one fsync for many alerts).  Readers
        see an alert only once it is committed."""

    @abc.abstractmethod
    def commit(self) -> int:
        """Make every alert added so far durable and visible; return how many were pending."""

    @abc.abstractmethod
    def get(self, seq: int) -> dict[str, Any] | None:
        """Summary plus ``doc`` (the full alert with its evidence events), or None."""

    @abc.abstractmethod
    def query(self, flt: AlertFilter, limit: int) -> list[dict[str, Any]]:
        """Summaries matching ``flt``, newest (highest ``seq``) first."""

    @abc.abstractmethod
    def after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """Summaries with ``seq`` greater than ``seq``, oldest first (the stream's replay)."""

    @abc.abstractmethod
    def last_seq(self) -> int:
        """Highest committed ``seq`` ever stored (0 for an empty store)."""

    @abc.abstractmethod
    def ack(self, seq: int, note: str, actor: str) -> dict[str, Any] | None:
        """Acknowledge an alert with a note (again: the note is replaced); None if unknown."""

    @abc.abstractmethod
    def overview(self, start_ns: int, end_ns: int, buckets: int) -> dict[str, Any]:
        """Counts over ``[start_ns, end_ns)``: by severity, rule, host,
        container, and per time bucket and severity."""

    @abc.abstractmethod
    def audit(self, action: str, actor: str, detail: dict[str, Any]) -> int:
        """Record an administrative action durably; return its id."""

    @abc.abstractmethod
    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest audit records, newest first."""

    @abc.abstractmethod
    def prune(self, now_ns: int | None = None) -> int:
        """Apply retention (age, count); return the number of alerts deleted."""

    @abc.abstractmethod
    def count(self) -> int:
        """Alerts currently stored."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store; safe to call twice."""


_SUMMARY_COLS = "seq, ts_ns, stored_ns, rule_id, rule_name, severity, host, container, acked_ns, ack_note, ack_by"


def _summary(row: Sequence[Any]) -> dict[str, Any]:
    seq, ts_ns, stored_ns, rule_id, rule_name, severity, host, container, acked_ns, note, by = row[:11]
    return {
        "id": seq, "seq": seq, "ts_ns": ts_ns, "ts": iso_ns(ts_ns), "stored_ns": stored_ns,
        "rule": {"id": rule_id, "name": rule_name}, "severity": severity,
        "host": host, "container": container,
        "ack": None if acked_ns is None else {"ts_ns": acked_ns, "ts": iso_ns(acked_ns), "note": note, "by": by},
    }


def iso_ns(ns: int) -> str:
    """ISO 8601 UTC with milliseconds (the SSE envelope's ``ts``)."""
    secs, rem = divmod(int(ns), 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rem // 10**6:03d}Z"


def migrate(conn: sqlite3.Connection, path: str, upto: int = SCHEMA_VERSION) -> int:
    """Bring the database to schema version ``upto``; return the version it had."""
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if found > SCHEMA_VERSION:
        raise StoreError(f"alert store {path}: schema version {found} is newer than this kestrel-edr-api-server "
                         f"understands ({SCHEMA_VERSION}); upgrade the plugin or use another file")
    for version, sql in MIGRATIONS:
        if found < version <= upto:
            try:
                conn.execute("BEGIN IMMEDIATE")
                for statement in filter(str.strip, sql.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreError(f"alert store {path}: migration to schema {version} failed: {exc}") from exc
    return found


class SqliteAlertStore(AlertStore):
    """One SQLite file in WAL mode: one writer connection under a lock, one
    reader connection per thread (WAL readers never wait for the writer)."""

    def __init__(self, path: str, *, synchronous: str = "full", max_age_s: float | None = None,
                 max_alerts: int | None = None, busy_timeout_ms: int = 5000) -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        self.path = os.path.abspath(path)
        self.max_age_s = max_age_s
        self.max_alerts = max_alerts
        self._sync = synchronous
        self._busy_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
            self._w = self._connect()
            mode = self._w.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"alert store {self.path}: could not switch to WAL (journal mode {mode})")
            self.migrated_from = migrate(self._w, self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"alert store {self.path}: {exc}") from exc
        self._last_seq = self._w.execute("SELECT COALESCE(MAX(seq), 0) FROM alerts").fetchone()[0]
        # AUTOINCREMENT's high-water mark survives deletes: the next seq is above it.
        row = self._w.execute("SELECT seq FROM sqlite_sequence WHERE name='alerts'").fetchone()
        if row:
            self._last_seq = max(self._last_seq, row[0])
        self._pending_seq = self._last_seq
        self._pending = 0
        self._in_tx = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
        conn.execute(f"PRAGMA synchronous = {self._sync.upper()}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError(f"alert store {self.path} is closed")
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    # ------------------------------------------------------------------ writes

    def _begin(self) -> None:
        if not self._in_tx:
            self._w.execute("BEGIN IMMEDIATE")
            self._in_tx = True

    def _commit_locked(self) -> int:
        pending = self._pending
        if self._in_tx:
            try:
                self._w.execute("COMMIT")
            finally:
                self._in_tx = False
        self._pending = 0
        self._last_seq = self._pending_seq
        return pending

    def _write(self, fn: Any) -> Any:
        """Run ``fn(conn)`` in one transaction, which also commits pending alerts."""
        with self._lock:
            self._begin()
            try:
                out = fn(self._w)
            except BaseException:
                self._w.execute("ROLLBACK")
                self._in_tx = False
                self._pending = 0
                self._pending_seq = self._last_seq
                raise
            self._commit_locked()
            return out

    def add(self, alert: NewAlert, commit: bool = True) -> dict[str, Any]:
        doc = json.dumps(alert.doc, default=str, separators=(",", ":"))
        now = time.time_ns()
        with self._lock:
            self._begin()
            cur = self._w.execute(
                "INSERT INTO alerts (ts_ns, stored_ns, rule_id, rule_name, severity, host, container, doc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (alert.ts_ns, now, alert.rule_id, alert.rule_name, alert.severity, alert.host, alert.container, doc))
            seq = cur.lastrowid
            self._pending_seq = seq
            self._pending += 1
            if commit:
                self._commit_locked()
        return _summary((seq, alert.ts_ns, now, alert.rule_id, alert.rule_name, alert.severity, alert.host,
                         alert.container, None, None, None))

    def commit(self) -> int:
        with self._lock:
            return self._commit_locked()

    @property
    def pending(self) -> int:
        """Alerts added but not committed yet."""
        return self._pending

    def add_many(self, alerts: Iterable[NewAlert]) -> int:
        """Bulk insert in one transaction (benchmarks and imports); returns the last seq."""
        now = time.time_ns()
        rows = [(a.ts_ns, now, a.rule_id, a.rule_name, a.severity, a.host, a.container,
                 json.dumps(a.doc, default=str, separators=(",", ":"))) for a in alerts]

        def insert(conn: sqlite3.Connection) -> int:
            conn.executemany(
                "INSERT INTO alerts (ts_ns, stored_ns, rule_id, rule_name, severity, host, container, doc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._pending_seq = conn.execute("SELECT MAX(seq) FROM alerts").fetchone()[0] or self._pending_seq
            return self._pending_seq

        return self._write(insert)

    def ack(self, seq: int, note: str, actor: str) -> dict[str, Any] | None:
        now = time.time_ns()

        def update(conn: sqlite3.Connection) -> int:
            n = conn.execute("UPDATE alerts SET acked_ns = ?, ack_note = ?, ack_by = ? WHERE seq = ?",
                             (now, note, actor, seq)).rowcount
            if n:
                conn.execute("INSERT INTO audit (ts_ns, action, actor, detail) VALUES (?, 'ack', ?, ?)",
                             (now, actor, json.dumps({"alert": seq, "note": note})))
            return n

        return self.get(seq) if self._write(update) else None

    def audit(self, action: str, actor: str, detail: dict[str, Any]) -> int:
        return self._write(lambda conn: conn.execute(
            "INSERT INTO audit (ts_ns, action, actor, detail) VALUES (?, ?, ?, ?)",
            (time.time_ns(), action, actor, json.dumps(detail, default=str))).lastrowid)

    def prune(self, now_ns: int | None = None) -> int:
        now_ns = time.time_ns() if now_ns is None else now_ns

        def delete(conn: sqlite3.Connection) -> int:
            deleted = 0
            if self.max_age_s is not None:
                cutoff = now_ns - int(self.max_age_s * 1e9)
                deleted += conn.execute("DELETE FROM alerts WHERE ts_ns < ?", (cutoff,)).rowcount
            if self.max_alerts is not None:
                row = conn.execute("SELECT seq FROM alerts ORDER BY seq DESC LIMIT 1 OFFSET ?",
                                   (self.max_alerts,)).fetchone()
                if row:
                    deleted += conn.execute("DELETE FROM alerts WHERE seq <= ?", (row[0],)).rowcount
            return deleted

        return self._write(delete)

    # ------------------------------------------------------------------ reads

    def last_seq(self) -> int:
        return self._last_seq

    def count(self) -> int:
        return self._reader().execute("SELECT COUNT(*) FROM alerts").fetchone()[0]

    def get(self, seq: int) -> dict[str, Any] | None:
        row = self._reader().execute(f"SELECT {_SUMMARY_COLS}, doc FROM alerts WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return None
        out = _summary(row)
        out["doc"] = json.loads(row[11])
        return out

    def query(self, flt: AlertFilter, limit: int) -> list[dict[str, Any]]:
        where, args = [], []
        if flt.start_ns is not None:
            # Open-ended ("since"): walk seq downwards from the newest and stop at the limit; the
            # ts index ("+" keeps the planner off it) would read and sort the whole window first.
            where.append("ts_ns >= ?" if flt.end_ns is not None else "+ts_ns >= ?")
            args.append(flt.start_ns)
        if flt.end_ns is not None:
            where.append("ts_ns < ?")
            args.append(flt.end_ns)
        if flt.severities:
            where.append(f"severity IN ({','.join('?' * len(flt.severities))})")
            args.extend(flt.severities)
        for col, value in (("rule_id", flt.rule), ("host", flt.host), ("container", flt.container)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        if flt.before_seq is not None:
            where.append("seq < ?")
            args.append(flt.before_seq)
        sql = f"SELECT {_SUMMARY_COLS} FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(int(limit))
        return [_summary(r) for r in self._reader().execute(sql, args)]

    def after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        rows = self._reader().execute(f"SELECT {_SUMMARY_COLS} FROM alerts WHERE seq > ? ORDER BY seq LIMIT ?",
                                      (seq, int(limit)))
        return [_summary(r) for r in rows]

    def overview(self, start_ns: int, end_ns: int, buckets: int) -> dict[str, Any]:
        db = self._reader()
        span = (start_ns, end_ns)
        buckets = max(1, int(buckets))
        width = max(1, -(-(end_ns - start_ns) // buckets))

        def grouped(col: str, top: int | None = None) -> list[dict[str, Any]]:
            sql = (f"SELECT {col}, COUNT(*) AS n FROM alerts WHERE ts_ns >= ? AND ts_ns < ? "
                   f"GROUP BY {col} ORDER BY n DESC, {col}")
            if top:
                sql += f" LIMIT {int(top)}"
            return [{"key": k, "count": n} for k, n in db.execute(sql, span)]

        series: dict[str, list[int]] = {}
        for b, sev, n in db.execute(
                "SELECT (ts_ns - ?) / ?, severity, COUNT(*) FROM alerts WHERE ts_ns >= ? AND ts_ns < ? "
                "GROUP BY 1, 2", (start_ns, width, *span)):
            series.setdefault(sev, [0] * buckets)[min(int(b), buckets - 1)] += n
        total, acked = db.execute("SELECT COUNT(*), COUNT(acked_ns) FROM alerts WHERE ts_ns >= ? AND ts_ns < ?",
                                  span).fetchone()
        return {
            "start_ns": start_ns, "end_ns": end_ns, "start": iso_ns(start_ns), "end": iso_ns(end_ns),
            "total": total, "acknowledged": acked,
            "by_severity": grouped("severity"), "by_rule": grouped("rule_id", 10),
            "by_host": grouped("host", 10), "by_container": grouped("container", 10),
            "timeline": {"bucket_ns": width, "buckets": buckets, "by_severity": series},
        }

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._reader().execute("SELECT id, ts_ns, action, actor, detail FROM audit ORDER BY id DESC LIMIT ?",
                                      (int(limit),))
        return [{"id": i, "ts_ns": ts, "ts": iso_ns(ts), "action": a, "actor": who, "detail": json.loads(d)}
                for i, ts, a, who, d in rows]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for conn in self._readers:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._readers.clear()
            if self._in_tx:  # what was added is kept: the sink's last flush may not have run
                self._commit_locked()
            self._w.close()
