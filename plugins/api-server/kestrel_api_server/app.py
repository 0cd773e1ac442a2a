"""The FastAPI application: REST endpoints, the SSE stream and the console.

Everything it needs is in an :class:`ApiState` (store, hub, run context,
settings), so tests can build the app over a store without a run.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import os
import time
from importlib import resources
from typing import Any, Callable, Literal

import anyio
import attrs
import orjson
from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from .hub import Hub
from .security import RateLimiter, token_matches
from .store import AlertFilter, AlertStore, iso_ns
from .wire import envelope, sse

STATIC = resources.files("kestrel_api_server") / "static"
SEVERITIES = ("critical", "high", "medium", "low")
MAX_LIMIT = 1000
MAX_ID = 2**63 - 1
"""SQLite integers are 64-bit: larger numbers in a request are a 422, not a 500."""
REPLAY_CHUNK = 500


@attrs.define(eq=False)
class ApiState:
    store: AlertStore
    hub: Hub
    token: str | None
    """Bearer token; None: no token configured (then /api/enforce is refused)."""
    auth_reads: bool
    """Every /api request needs the token (non-loopback bind, or ``auth = "always"``)."""
    context: Any = None
    """The run's :class:`~kestrel_core.runtime.RunContext` (None outside a run)."""
    heartbeat_s: float = 30.0
    max_body_bytes: int = 65536
    rate: RateLimiter = attrs.Factory(lambda: RateLimiter(0, 0))
    cors_origins: tuple[str, ...] = ()
    enforce: Callable[[bool], list[int]] | None = None
    """Switch enforcement for the running enforcers (actions-enforce's ``set_enforcement``)."""
    enforce_unavailable: str = ""
    events_rate: Callable[[], float] = lambda: 0.0
    started_ns: int = attrs.Factory(time.time_ns)
    sources: list[dict[str, Any]] = attrs.Factory(list)


# ------------------------------------------------------------------ request models


class AckRequest(BaseModel):
    note: str = Field(default="", max_length=4000, description="Why the alert is acknowledged.")


class EnforceRequest(BaseModel):
    state: Literal["on", "off"] = Field(description="`off`: every rule only detects, as `kestrel enforce off`.")


# ------------------------------------------------------------------ response shapes (documentation only:
# the endpoints return orjson bodies; tests check the bodies against these names)


class RuleRef(BaseModel):
    id: str
    name: str


class AckInfo(BaseModel):
    ts_ns: int
    ts: str
    note: str
    by: str


class AlertSummary(BaseModel):
    id: int = Field(description="the alert's sequence number: increasing, never reused; the SSE id")
    seq: int
    ts_ns: int = Field(description="time of the alert's last matched event, ns since the epoch")
    ts: str
    stored_ns: int
    rule: RuleRef
    severity: str
    host: str | None
    container: str | None
    ack: AckInfo | None


class AlertPage(BaseModel):
    alerts: list[AlertSummary]
    next_cursor: str | None = Field(description="pass as cursor for the next (older) page; null on the last")
    last_seq: int = Field(description="resume /api/stream from here (Last-Event-ID) to miss nothing")


class Evidence(BaseModel):
    step: int
    ts: str | None
    category: str | None
    action: Any = None
    source: str | None = None
    event_id: int | None = None
    event: dict[str, Any]


class AlertDetail(AlertSummary):
    description: str
    fields: dict[str, Any]
    join_keys: list[Any]
    actions: list[str]
    mode: str | None
    incomplete_due_to_loss: bool
    evidence: list[Evidence]


class Envelope(BaseModel):
    type: Literal["alert", "event", "heartbeat"]
    ts: str = Field(description="ISO 8601, UTC")
    container: str | None
    payload: Any = Field(description="alert: an AlertSummary; event: the ECS event; heartbeat: last_id, interval_s")


def doc(model: type[BaseModel], what: str = "OK") -> dict:
    return {200: {"model": model, "description": what}}


# ------------------------------------------------------------------ helpers


def J(content: Any, status: int = 200) -> Response:
    """A JSON response encoded by orjson (FastAPI's own encoder costs tens of ms per 100 alerts)."""
    return Response(orjson.dumps(content, default=str), status_code=status, media_type="application/json")


def parse_time(value: str | None, name: str) -> int | None:
    """ISO 8601 (``2026-11-22T09:00:00Z``) or integer nanoseconds since the epoch."""
    if value is None or value == "":
        return None
    if value.lstrip("-").isdigit():
        return _bounded(int(value), name)
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise HTTPException(422, f"{name}: not an ISO 8601 time or integer nanoseconds: {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return _bounded(int(when.timestamp() * 1e9), name)


def _bounded(value: int, name: str) -> int:
    if not -MAX_ID <= value <= MAX_ID:
        raise HTTPException(422, f"{name}: out of range")
    return value


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if raw[0] != "s":
            raise ValueError
        return _bounded(int(raw[1:]), "cursor")
    except (ValueError, IndexError, UnicodeDecodeError):
        raise HTTPException(422, f"cursor: not a cursor this server issued: {cursor!r}") from None


def _client(scope: dict) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def _loopback_host(host: str) -> bool:
    name = host.rsplit("]", 1)[0].lstrip("[") if host.startswith("[") else host.rsplit(":", 1)[0]
    if name.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _event_time(doc: dict[str, Any]) -> str | None:
    ts = doc.get("@timestamp")
    return ts if isinstance(ts, str) else None


def _lookup(doc: Any, path: str) -> Any:
    if not isinstance(doc, dict):
        return None
    if path in doc:
        return doc[path]
    head, _, rest = path.partition(".")
    return _lookup(doc.get(head), rest) if rest else doc.get(head)


# ------------------------------------------------------------------ middleware


class Guard:
    """Pure ASGI middleware (streams pass through untouched): bearer token,
    rate limit, request size, JSON-only POSTs and the CORS policy."""

    def __init__(self, app: Any, state: ApiState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        st = self.state
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        allowed_origin = origin if origin and origin in st.cors_origins else None

        async def reply(status: int, detail: str, extra: dict[str, str] | None = None) -> None:
            body = json.dumps({"detail": detail}).encode()
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            hdrs += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
            if allowed_origin:
                hdrs.append((b"access-control-allow-origin", allowed_origin.encode()))
            await send({"type": "http.response.start", "status": status, "headers": hdrs})
            await send({"type": "http.response.body", "body": body})

        if scope["method"] == "OPTIONS":
            if not allowed_origin:
                return await reply(403, "cross-origin requests are not allowed (cors_origins is empty)")
            hdrs = [(b"access-control-allow-origin", allowed_origin.encode()),
                    (b"access-control-allow-methods", b"GET, POST"),
                    (b"access-control-allow-headers", b"authorization, content-type, last-event-id"),
                    (b"access-control-max-age", b"600"), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 204, "headers": hdrs})
            return await send({"type": "http.response.body", "body": b""})

        if not st.auth_reads and not _loopback_host(headers.get("host", "")):
            # reads are open on loopback: a page on another site that rebinds its DNS name to
            # 127.0.0.1 would reach them, with its own name in Host
            return await reply(403, "Host header must name this machine's loopback (localhost, 127.0.0.1, [::1])")

        if not st.rate.allow(_client(scope)):
            return await reply(429, "rate limit exceeded", {"retry-after": "1"})

        if path.startswith("/api"):
            need = st.auth_reads or path == "/api/enforce"
            if need:
                if st.token is None:
                    return await reply(403, "no API token is configured on this server; set token or token_file "
                                            "in the api sink's profile table")
                if not token_matches(headers.get("authorization"), st.token):
                    return await reply(401, "missing or wrong bearer token", {"www-authenticate": "Bearer"})

        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > st.max_body_bytes):
                return await reply(413, f"request body larger than {st.max_body_bytes} bytes")
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                # also keeps plain cross-site form posts (no preflight) away from ack and enforce
                return await reply(415, "request body must be application/json")
            seen = 0
            inner_receive = receive

            async def receive() -> dict:  # noqa: F811 - counts a chunked body too
                nonlocal seen
                message = await inner_receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > st.max_body_bytes:
                        raise HTTPException(413, f"request body larger than {st.max_body_bytes} bytes")
                return message

        if allowed_origin:
            inner_send = send

            async def send(message: dict) -> None:  # noqa: F811
                if message["type"] == "http.response.start":
                    message = dict(message)
                    message["headers"] = [*message.get("headers", []),
                                          (b"access-control-allow-origin", allowed_origin.encode()),
                                          (b"vary", b"origin")]
                await inner_send(message)

        await self.app(scope, receive, send)


# ------------------------------------------------------------------ the app


def create_app(state: ApiState) -> FastAPI:
    app = FastAPI(
        title="Kestrel alert API", version="0.1.0",
        description="Alerts, overview, rules and health of a running Kestrel; live alerts over Server-Sent Events.",
        openapi_url="/api/openapi.json", docs_url="/api/docs", redoc_url=None,
    )
    app.state.api = state
    st = state

    @app.get("/api/alerts", summary="List alerts, newest first, with filters and cursor pagination",
             responses=doc(AlertPage))
    def list_alerts(
        start: str | None = Query(None, description="ISO 8601 or ns since the epoch; alerts at or after it"),
        end: str | None = Query(None, description="ISO 8601 or ns; alerts before it"),
        limit: int = Query(100, ge=1, le=MAX_LIMIT),
        severity: str | None = Query(None, description="one severity or a comma-separated list"),
        rule: str | None = Query(None, description="rule id"),
        host: str | None = Query(None, description="host.name of the alert's last event"),
        container: str | None = Query(None, description="container.id (else container.name) of its last event"),
        cursor: str | None = Query(None, description="next_cursor of the previous page"),
    ) -> Response:
        sevs = tuple(s.strip().lower() for s in severity.split(",") if s.strip()) if severity else ()
        flt = AlertFilter(start_ns=parse_time(start, "start"), end_ns=parse_time(end, "end"), severities=sevs,
                          rule=rule or None, host=host or None, container=container or None,
                          before_seq=decode_cursor(cursor) if cursor else None)
        last_seq = st.store.last_seq()
        rows = st.store.query(flt, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return J({"alerts": rows, "next_cursor": encode_cursor(rows[-1]["seq"]) if more else None,
                  "last_seq": max([last_seq, *(r["seq"] for r in rows)])})

    def _get(alert_id: int) -> dict[str, Any]:
        got = st.store.get(alert_id)
        if got is None:
            raise HTTPException(404, f"no alert {alert_id}")
        return got

    @app.get("/api/alerts/{alert_id}", summary="One alert with its evidence events (timeline) and fields",
             responses=doc(AlertDetail))
    def get_alert(alert_id: int = Path(ge=1, le=MAX_ID)) -> Response:
        got = _get(alert_id)
        doc = got.pop("doc")
        meta = doc.get("evidence") or []
        evidence = []
        for i, e in enumerate(doc.get("events", [])):
            m = meta[i] if i < len(meta) else {}
            category = m.get("category") or _lookup(e, "event.category")
            evidence.append({"step": i, "ts": iso_ns(m["ts_ns"]) if m.get("ts_ns") else _event_time(e),
                             "category": category[0] if isinstance(category, list) and category else category,
                             "action": _lookup(e, "event.action"), "source": m.get("source"),
                             "event_id": m.get("event_id"), "event": e})
        return J({**got, "description": doc.get("description", ""), "rule": {**got["rule"], **doc.get("rule", {})},
                  "fields": doc.get("fields", {}), "join_keys": doc.get("join_keys", []),
                  "actions": doc.get("actions", []), "mode": doc.get("mode"),
                  "incomplete_due_to_loss": doc.get("incomplete_due_to_loss", False), "evidence": evidence})

    @app.post("/api/alerts/{alert_id}/ack", summary="Acknowledge an alert with a note", responses=doc(AlertSummary))
    def ack_alert(body: AckRequest, request: Request, alert_id: int = Path(ge=1, le=MAX_ID)) -> Response:
        actor = _client(request.scope)
        got = st.store.ack(alert_id, body.note, actor)
        if got is None:
            raise HTTPException(404, f"no alert {alert_id}")
        got.pop("doc", None)
        return J(got)

    @app.get("/api/overview", summary="Counts by severity, rule, host and container over a window; engine rates")
    def overview(start: str | None = Query(None, description="default: end - 24 h"),
                 end: str | None = Query(None, description="default: now"),
                 buckets: int = Query(24, ge=1, le=500)) -> Response:
        end_ns = parse_time(end, "end")
        if end_ns is None:
            end_ns = time.time_ns()
        start_ns = parse_time(start, "start")
        if start_ns is None:
            start_ns = end_ns - 24 * 3600 * 10**9
        if start_ns >= end_ns:
            raise HTTPException(422, "start must be before end")
        out = st.store.overview(start_ns, end_ns, buckets)
        out["engine"] = _engine_stats()
        return J(out)

    def _engine_stats() -> dict[str, Any]:
        ctx = st.context
        if ctx is None:
            return {"running": False}
        s = ctx.stats
        with s.lock:
            dropped = [{"source": k[0], "reason": k[1], "count": v} for k, v in s.events_dropped.items()]
            lost = [{"source": k[0], "reason": k[1], "count": v} for k, v in s.events_lost.items()]
            balance = s.balance()
            last = s.last_event_ts_ns
            queue = s.queue_depth
        return {"running": True, "mode": ctx.mode, "events_per_s": round(st.events_rate(), 3),
                "events_read": balance["read"], "events_processed": balance["processed"],
                "events_dropped": balance["dropped"], "dropped": dropped, "lost": lost,
                "events_lost": sum(x["count"] for x in lost), "queue_events": queue,
                "last_event_ts": iso_ns(last) if last else None}

    def _rule_costs(ctx: Any) -> dict[str, dict[str, float]]:
        """Per-rule cost from the run's cost profile (``[engine] cost_profile = true``), else {}."""
        if ctx is None:
            return {}
        names = {"eval_seconds": "kestrel_rule_eval_seconds_total", "evaluations": "kestrel_rule_evaluations_total",
                 "candidate_hits": "kestrel_rule_candidate_hits_total"}
        with ctx.stats.lock:
            metrics = dict(ctx.stats.extra.get("metrics", {}))
        out = {}
        for key, name in names.items():
            m = metrics.get(name)
            if not m:
                continue
            values = m["values"]() if callable(m.get("values")) else m.get("values", {})
            out[key] = {labels[0]: v for labels, v in values.items()}
        return out

    @app.get("/api/rules", summary="Loaded rules, the run's mode, alert counts per rule")
    def rules() -> Response:
        ctx = st.context
        engine = getattr(ctx, "engine", None)
        hits: dict[str, int] = {}
        disabled: dict[str, str] = {}
        if ctx is not None:
            with ctx.stats.lock:
                for (rule_id, _sev), n in ctx.stats.alerts.items():
                    hits[rule_id] = hits.get(rule_id, 0) + n
        if engine is not None:
            for (rule_id, reason), _ in getattr(engine, "disabled", {}).items():
                disabled[rule_id] = reason
        costs = _rule_costs(ctx)
        try:
            from kestrel_core.eql.classify import explain_rule
        except ImportError:  # an older core without the classifier
            explain_rule = None
        out = []
        for compiled in getattr(engine, "rules", []) or []:
            r = compiled.rule
            strategy = None
            if explain_rule is not None:
                try:
                    ex = explain_rule(engine, compiled)
                    strategy = {"strategy": ex.strategy, "reason": ex.reason}
                except Exception:  # noqa: BLE001 - the classification is informative only
                    strategy = None
            out.append({"id": r.id, "name": r.name, "severity": r.severity, "mode": r.mode,
                        "actions": list(r.actions), "tags": list(r.tags), "pack": r.pack,
                        "kind": compiled.query.kind, "query": r.query, "hits": hits.get(r.id, 0),
                        "disabled": disabled.get(r.id), "matching": strategy,
                        "cost": {k: v.get(r.id, 0) for k, v in costs.items()} if costs else None})
        return J({"mode": getattr(ctx, "mode", None), "count": len(out), "rules": out})

    @app.get("/api/health", summary="Liveness plus source, engine and store state")
    def health() -> Response:
        store = {"ok": True, "alerts": None, "last_seq": st.store.last_seq()}
        try:
            store["alerts"] = st.store.count()
            store["path"] = getattr(st.store, "path", None)
        except Exception as exc:  # the store is broken: say so, health still answers
            store.update(ok=False, error=str(exc))
        now = time.time_ns()
        return J({"status": "ok" if store["ok"] else "degraded", "time": iso_ns(now),
                  "uptime_s": round((now - st.started_ns) / 1e9, 3), "store": store, "sources": st.sources,
                  "engine": _engine_stats(),
                  "stream": {"subscribers": st.hub.subscribers, "heartbeat_s": st.heartbeat_s}})

    @app.get("/api/audit", summary="Administrative actions (acknowledgements, enforcement switches), newest first")
    def audit(limit: int = Query(100, ge=1, le=MAX_LIMIT)) -> Response:
        return J({"audit": st.store.audit_log(limit)})

    @app.post("/api/enforce", summary="Switch enforcement on or off (as `kestrel enforce`); token required, audited")
    def enforce(body: EnforceRequest, request: Request) -> JSONResponse:
        actor = _client(request.scope)
        enabled = body.state == "on"
        if st.enforce is None:
            st.store.audit("enforce", actor, {"state": body.state, "outcome": "unavailable",
                                              "reason": st.enforce_unavailable})
            raise HTTPException(501, f"enforcement switch unavailable: {st.enforce_unavailable}")
        try:
            pids = st.enforce(enabled)
        except (TimeoutError, OSError) as exc:
            st.store.audit("enforce", actor, {"state": body.state, "outcome": "error", "error": str(exc)})
            raise HTTPException(503, f"enforcement {body.state}: {exc}") from None
        audit_id = st.store.audit("enforce", actor, {"state": body.state, "outcome": "applied", "applied_by": pids})
        return JSONResponse({"state": body.state, "applied_by": pids, "audit_id": audit_id})

    @app.get("/api/stream", summary="Server-Sent Events: alerts (resumable with Last-Event-ID), heartbeats, events",
             response_class=StreamingResponse,
             responses={200: {"description": "text/event-stream; each data: line is one Envelope (JSON); alerts "
                                             "carry id: <alert id>", "model": Envelope}})
    async def stream(request: Request,
                     types: str = Query("alert", description="comma-separated: alert, event"),
                     last_event_id: int | None = Query(None, ge=0, le=MAX_ID,
                                                       description="as the Last-Event-ID header (wins over it)")
                     ) -> StreamingResponse:
        kinds = {t.strip() for t in types.split(",") if t.strip()}
        if not kinds <= {"alert", "event"}:
            raise HTTPException(422, f"types: unknown {sorted(kinds - {'alert', 'event'})}; use alert, event")
        header = request.headers.get("last-event-id")
        resume = last_event_id
        if resume is None and header:
            if not header.strip().isdigit():
                raise HTTPException(422, f"Last-Event-ID: not an alert id: {header!r}")
            resume = min(int(header), MAX_ID)
        newest = st.store.last_seq()
        if resume is None:
            resume = newest  # a new client: live from now
        reset = resume > newest  # ids from another store (a new file): everything here is new to it
        if reset:
            resume = 0
        sub = st.hub.subscribe(want_events="event" in kinds)
        loop = asyncio.get_running_loop()

        def heartbeat(last: int, **extra: Any) -> str:
            return sse(envelope("heartbeat", {"last_id": last, "interval_s": st.heartbeat_s, **extra}))

        async def body():
            last = resume
            try:
                yield f"retry: 1000\n{heartbeat(last, **({'reset': True} if reset else {}))}"
                next_beat = loop.time() + st.heartbeat_s
                while not st.hub.closed:
                    sub.wake.clear()
                    if "alert" in kinds:
                        while True:
                            recent = st.hub.recent.since(last, REPLAY_CHUNK)
                            if recent is None:  # further back than the window: from the store
                                rows = await anyio.to_thread.run_sync(st.store.after, last, REPLAY_CHUNK)
                                recent = [(r["seq"], sse(envelope("alert", r, r["container"]), r["seq"])) for r in rows]
                            if recent:
                                yield "".join(text for _, text in recent)
                                last = recent[-1][0]
                            if len(recent) < REPLAY_CHUNK:
                                break
                    if sub.events:
                        chunk = []
                        while sub.events:
                            doc = sub.events.popleft()
                            chunk.append(sse(envelope("event", doc, doc.get("container.id") or doc.get("container.name"))))
                        yield "".join(chunk)
                    timeout = next_beat - loop.time()
                    if timeout <= 0:
                        yield heartbeat(last)
                        next_beat = loop.time() + st.heartbeat_s
                        continue
                    try:
                        await asyncio.wait_for(sub.wake.wait(), timeout)
                    except asyncio.TimeoutError:
                        pass
            finally:
                sub.close()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    # ------------------------------------------------------------------ console

    def _static(name: str, media: str) -> Response:
        path = STATIC / name
        return Response(path.read_bytes(), media_type=media, headers={"cache-control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return _static("index.html", "text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        media = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".svg": "image/svg+xml"}.get(os.path.splitext(name)[1])
        if media is None or "/" in name or name.startswith(".") or not (STATIC / name).is_file():
            raise HTTPException(404, "not found")
        return _static(name, media)

    return app



def build_asgi(state: ApiState) -> Guard:
    """The app behind its :class:`Guard`: what the server runs."""
    return Guard(create_app(state), state)
