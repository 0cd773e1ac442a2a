"""The ``webhook`` sink: each alert as JSON in an HTTP(S) POST.

Built on the standard library's ``urllib.request``: one POST with a timeout,
headers and TLS verification is all it needs, and the core takes no new
dependency for it (``requests``/``httpx`` are not installed by the core).
Retries with back-off, bypassing a receiver that keeps failing, the queue
that keeps a slow receiver from holding up detection, and the counters are
the pipeline's, for every sink (kestrel_core/delivery.py); this sink says
which failures are worth retrying.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

import attrs

from ..delivery import SinkError
from ..interfaces import Sink
from ..jsonlines import dump_json
from ..validators import positive

RETRYABLE_STATUS = frozenset({408, 425, 429})
"""4xx answers that may succeed later; every 5xx is retried too."""


def _validate_url(_inst: Any, attribute: Any, value: str) -> None:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{attribute.name} must be an http:// or https:// URL with a host, not {value!r}")


def _validate_headers(_inst: Any, attribute: Any, value: dict) -> None:
    for key, val in value.items():
        if not isinstance(val, str) or not key or any(c in key + val for c in "\r\n"):
            raise ValueError(f"{attribute.name}: header {key!r} must be a one-line string, not {val!r}")


class WebhookSink(Sink):
    """POSTs alerts (``Alert.to_dict``) as JSON: one object per request, or
    with ``batch_size`` > 1 an array of up to that many alerts that were
    waiting together; incident records (``{"incident": ...}``) one per request."""

    PLUGIN_NAME = "webhook"
    DESCRIPTION = "alerts as JSON in HTTP(S) POSTs, retried with back-off"
    DELIVERY_DEFAULTS = {"retries": 3, "backoff_ms": 500, "backoff_max_ms": 30000}
    """A receiver that is briefly down or overloaded gets the alert on a later attempt (docs/profile-reference.md)."""

    @attrs.define(kw_only=True)
    class Settings:
        url: str = attrs.field(validator=_validate_url)
        """Where to POST: ``http://`` or ``https://``."""
        timeout_s: float = attrs.field(default=5.0, validator=positive)
        """Longest wait for the receiver to connect and answer one POST."""
        batch_size: int = attrs.field(default=1, validator=positive)
        """1: one alert (a JSON object) per POST; more: alerts waiting together go as one JSON array of up to this
        many."""
        headers: dict = attrs.field(factory=dict, validator=_validate_headers)
        """Extra request headers (``{ "X-Tenant" = "a" }``)."""
        token: str = ""
        """Sent as ``Authorization: Bearer <token>``; prefer ``token_env``."""
        token_env: str = ""
        """Environment variable holding the token (read at start), so it stays out of the profile."""
        verify_tls: bool = True
        """Check the receiver's certificate and name (https)."""
        ca_file: str = ""
        """CA bundle to verify the receiver against (relative to the profile); empty: the system's."""
        incidents: str = attrs.field(default="closed", validator=attrs.validators.in_(("closed", "all", "none")))
        """With ``[incidents] enable``: which incident records to POST, each as one JSON object
        (``closed``: an incident once, when it is complete; ``all``: opened and updated too)."""

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        self.alert_batch = settings.batch_size  # the pipeline hands write_alerts up to this many at once
        parts = urllib.parse.urlsplit(settings.url)
        # For messages: no credentials or query string (they may hold secrets).
        self.display_url = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

    def open(self) -> None:
        # Here, not at module level: ssl and urllib.request cost ~8 MB resident
        # in every agent, and most profiles never open a webhook.
        import ssl
        import urllib.request

        s = self.settings
        headers = {"Content-Type": "application/json", "User-Agent": "kestrel-webhook", **s.headers}
        token = s.token
        if s.token_env:
            token = os.environ.get(s.token_env, "")
            if not token:
                raise ValueError(f"token_env: environment variable {s.token_env!r} is not set or empty")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._headers = headers
        handlers: list[Any] = []
        if urllib.parse.urlsplit(s.url).scheme == "https":
            cafile = None
            if s.ca_file:
                profile = self.context.profile
                cafile = str(profile.resolve_path(s.ca_file) if profile is not None else s.ca_file)
            ctx = ssl.create_default_context(cafile=cafile)  # OSError for a missing file: a start error
            if not s.verify_tls:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        self._opener = urllib.request.build_opener(*handlers)

    def write_alert(self, alert: Any) -> None:
        self.write_alerts([alert])

    def write_alerts(self, alerts: list[Any]) -> None:
        schema = self.context.schema
        docs = [alert.to_dict(schema) for alert in alerts]
        body = dump_json(docs[0] if self.settings.batch_size == 1 else docs)
        self._post(body, len(alerts))

    def write_incident(self, record: dict[str, Any]) -> None:
        wanted = self.settings.incidents
        inc = record["incident"]
        if wanted == "none" or (wanted == "closed" and (inc["status"] != "closed" or inc.get("reason") == "merged")):
            return
        self._post(dump_json(record), 1, "incident")

    def _post(self, body: bytes, n: int, noun: str = "alert") -> None:
        import http.client
        import ssl
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.settings.url, data=body, headers=self._headers, method="POST")
        what = f"POST {self.display_url} ({n} {noun}{'s' if n != 1 else ''})"
        try:
            with self._opener.open(request, timeout=self.settings.timeout_s) as response:
                response.read()  # the whole answer, so the connection ends cleanly
        except urllib.error.HTTPError as exc:
            exc.close()
            retryable = exc.code >= 500 or exc.code in RETRYABLE_STATUS
            raise SinkError(f"{what}: HTTP {exc.code} {exc.reason}", retryable=retryable) from None
        except TimeoutError:
            raise SinkError(f"{what}: no answer within {self.settings.timeout_s:g} s (timeout_s)") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise SinkError(f"{what}: no answer within {self.settings.timeout_s:g} s (timeout_s)") from None
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise SinkError(f"{what}: TLS: {reason.verify_message or reason}", retryable=False) from None
            text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
            raise SinkError(f"{what}: {text}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # reset mid-answer, bad status line
            raise SinkError(f"{what}: {type(exc).__name__}: {exc}") from None
