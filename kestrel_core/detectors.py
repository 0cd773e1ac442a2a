"""Detectors (``[[detectors]]``): non-rule detection run after the engine on
every batch, by ``kestrel run`` and ``kestrel replay`` alike, so both give
the same alerts.  One detector that raises is isolated: the error is logged
(the first few in full, then counted only) and counted in
``stats.detector_errors``; the other detectors and the run go on."""

from __future__ import annotations

import logging
from typing import Any, Sequence

log = logging.getLogger("kestrel")

ERRORS_METRIC = "kestrel_detector_errors_total"
ERRORS_LOGGED = 10
"""Errors logged in full per detector; later ones are only counted (a detector
failing on every batch must not flood the log)."""


class DetectorSet:
    """The run's detectors with their profile names (``baseline``, ``baseline#2``)."""

    def __init__(self, detectors: Sequence[Any], stats: Any) -> None:
        self.detectors = list(detectors)
        self.stats = stats
        self.names: list[str] = []
        seen: dict[str, int] = {}
        for det in self.detectors:
            seen[det.PLUGIN_NAME] = seen.get(det.PLUGIN_NAME, 0) + 1
            n = seen[det.PLUGIN_NAME]
            self.names.append(det.PLUGIN_NAME if n == 1 else f"{det.PLUGIN_NAME}#{n}")

    @classmethod
    def build(cls, profile: Any, registry: Any, context: Any) -> "DetectorSet":
        """One detector per ``[[detectors]]`` entry; a detector that cannot be
        built or opened is a start error naming its entry."""
        from .cliutil import start_error

        built = []
        for spec in getattr(profile, "detectors", ()) or ():
            where = f"{profile.path}:{spec.line}:{spec.column}: detector {spec.type!r}"
            try:
                det = registry.get("detector", spec.type).cls(spec.settings, context)
                det.open()
            except (OSError, ValueError) as exc:
                for other in built:
                    other.close()
                raise start_error(where, exc) from None
            built.append(det)
        return cls(built, context.stats)

    def widen(self, interest: Any) -> Any:
        """The rules' source push-down widened to what the detectors need:
        their categories (every category if one names none), and no literal
        filters, which only know the rules' values."""
        if not self.detectors:
            return interest
        from .interfaces import Interest

        wanted = [frozenset(det.CATEGORIES) for det in self.detectors]
        if interest.wants_all or not all(wanted):
            return Interest(categories=interest.categories, fields=interest.fields, wants_all=True)
        return Interest(categories=interest.categories.union(*wanted), fields=interest.fields, wants_all=False)

    def __bool__(self) -> bool:
        return bool(self.detectors)

    def _call(self, i: int, method: str, *args: Any) -> list[Any]:
        try:
            return list(getattr(self.detectors[i], method)(*args) or ())
        except Exception as exc:  # noqa: BLE001 - a detector's bug must not take down the run
            name = self.names[i]
            with self.stats.lock:
                self.stats.detector_errors[name] += 1
                n = self.stats.detector_errors[name]
                # exported by sink-prometheus like every published counter
                self.stats.extra.setdefault("metrics", {})[ERRORS_METRIC] = {
                    "type": "counter", "help": "Calls of a detector that raised (that call gave no alerts).",
                    "labels": ("detector",), "values": dict(self.stats.detector_errors)}
            if n <= ERRORS_LOGGED:
                log.error("detector %r failed in %s: %s: %s%s", name, method, type(exc).__name__, exc,
                          "; further errors are only counted" if n == ERRORS_LOGGED else "",
                          exc_info=n == 1)
            return []

    def process(self, events: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        for i in range(len(self.detectors)):
            out.extend(self._call(i, "process", events))
        return out

    def flush(self) -> list[Any]:
        out: list[Any] = []
        for i in range(len(self.detectors)):
            out.extend(self._call(i, "flush"))
        return out

    def close(self) -> None:
        for i in range(len(self.detectors)):
            self._call(i, "close")
