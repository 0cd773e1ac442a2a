"""Hot reload of rule packs during a run (``[rules] watch = true``).

A background thread watches the pack directories with ``watchfiles`` (a Rust
``notify`` backend: inotify here, no polling; it debounces bursts of writes
into one change set, and stops promptly through ``stop_event``).  On a change
it loads and compiles the whole pack set off the engine thread.  A pack set
with ANY error (located rule errors, engine compile errors) is rejected
whole: the previous rules keep running, every error is logged and the
rejection counted.  A good one is handed over as a finished engine; the
engine thread swaps it in between two batches (:meth:`RuleReloader.take`),
so no event meets a half-loaded pack, and moves the sequence state of
unchanged rules across (:meth:`DetectionEngine.adopt_state`).

Metrics (through ``stats.extra["metrics"]``, exported by sink-prometheus):
``kestrel_rule_reloads_total{outcome="applied|rejected"}``,
``kestrel_rule_pack_info{pack,version,hash}`` (1 per loaded pack),
``kestrel_rule_set_info{hash}`` and ``kestrel_rules_loaded``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import attrs

from .packs import PackSet, load_packs, pack_rule_files

log = logging.getLogger("kestrel")

METRICS_KEY = "metrics"


def publish_packs(stats: Any, ps: PackSet, n_rules: int) -> None:
    """Gauges describing the loaded pack set."""
    with stats.lock:
        metrics = stats.extra.setdefault(METRICS_KEY, {})
        metrics["kestrel_rule_pack_info"] = {
            "help": "Loaded rule packs (value 1; hash: sha256 of the pack's files).",
            "labels": ("pack", "version", "hash"),
            "values": {(p.name, p.version, p.hash): 1 for p in ps.packs},
        }
        metrics["kestrel_rule_set_info"] = {
            "help": "Hash of the merged rule set running now (value 1).",
            "labels": ("hash",),
            "values": {(ps.hash,): 1},
        }
        metrics["kestrel_rules_loaded"] = {"help": "Rules running now.", "labels": (), "values": {(): n_rules}}


@attrs.define(eq=False)
class Swap:
    """A compiled pack set waiting for the engine thread."""

    engine: Any
    packset: PackSet
    extra: dict[str, Any] = attrs.Factory(dict)
    """What the engine factory built besides the engine (runtime, matcher)."""
    changed_at: float = 0.0
    """time.monotonic() when the watcher reported the change."""


class RuleReloader:
    """Watches ``paths`` and prepares engines for the engine thread.

    :param paths: the profile's rule paths (packs, directories, files).
    :param build: ``(pack set, previous engine or None)`` -> (engine, extra
        components); called on the watcher thread; builds new instances
        (the previous engine only lends its compiled, stateless host predicates).
    :param current: the pack set running now.
    :param stats: the run's Stats (counters and gauges are published there).
    :param engine: the engine running now (for predicate reuse).
    """

    def __init__(self, paths: list[Path], build: Callable[[PackSet, Any], tuple[Any, dict[str, Any]]],
                 current: PackSet, stats: Any, *, engine: Any = None, debounce_ms: int = 500, step_ms: int = 50,
                 tick_ms: int = 250) -> None:
        self._last_engine = engine
        """The newest engine (running or handed over): what the next build reuses."""
        self.paths = [Path(p) for p in paths]
        self._resolved = [p.resolve() for p in self.paths]
        """Watched and reported paths are compared in resolved form."""
        self.build = build
        self.current_hash = current.hash
        self.stats = stats
        self.debounce_ms, self.step_ms, self.tick_ms = debounce_ms, step_ms, tick_ms
        self.outcomes: Counter = Counter()
        self.ready = threading.Event()
        """Set once the watcher is live (changes after this are seen)."""
        self.last_errors: list[Any] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: Swap | None = None
        self._thread: threading.Thread | None = None
        self._fingerprint = self._stat_fingerprint()
        self._publish_outcomes()

    # ------------------------------------------------------------------ watch targets

    def _roots(self) -> list[Path]:
        """Directories to watch: pack directories, and the parent of a single file."""
        roots: list[Path] = []
        for p in self._resolved:
            root = p if p.is_dir() else p.parent
            if root.is_dir() and root not in roots:
                roots.append(root)
        return roots

    def _relevant(self, path: str) -> bool:
        changed = Path(path)
        if changed.suffix != ".toml" or changed.name.startswith("."):
            return False
        for p in self._resolved:
            if changed == p or p in changed.parents:
                return True
        return False

    def _stat_fingerprint(self) -> tuple:
        """(path, mtime, size) of every rule file: closes the race between the
        initial load and the watcher going live."""
        out = []
        for p in self.paths:
            files = ([p / "pack.toml"] + pack_rule_files(p)) if p.is_dir() else [p]
            for f in files:
                try:
                    st = f.stat()
                    out.append((str(f), st.st_mtime_ns, st.st_size))
                except OSError:
                    pass
        return tuple(out)

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="rule-reloader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        try:
            from watchfiles import watch
        except ImportError as exc:  # degrade: the run goes on with the rules it has
            log.warning("rule hot reload disabled: watchfiles is not importable (%s)", exc)
            return
        roots = self._roots()
        if not roots:
            log.warning("rule hot reload disabled: none of the rule paths exists")
            return
        try:
            for changes in watch(*roots, watch_filter=lambda _c, path: self._relevant(path),
                                 debounce=self.debounce_ms, step=self.step_ms, rust_timeout=self.tick_ms,
                                 yield_on_timeout=True, stop_event=self._stop, raise_interrupt=False):
                now = time.monotonic()
                if not self.ready.is_set():
                    self.ready.set()
                    log.info("watching rule packs for changes: %s", ", ".join(map(str, roots)))
                    if not changes and self._stat_fingerprint() != self._fingerprint:
                        changes = {("modified", "before the watcher started")}
                if changes:
                    log.info("rule packs changed (%s); reloading", ", ".join(sorted(c[1] for c in changes))[:400])
                    self.reload(now)
        except Exception as exc:  # never take the run down: it keeps its rules
            log.error("rule hot reload stopped: %s: %s", type(exc).__name__, exc)

    # ------------------------------------------------------------------ compile

    def reload(self, changed_at: float | None = None) -> bool:
        """Load and compile the pack set now (watcher thread).  True when a new
        engine is ready for the engine thread."""
        changed_at = time.monotonic() if changed_at is None else changed_at
        # the engine parses every query anyway and reports syntax errors at the
        # same file positions: parsing twice would double the reload time
        ps = load_packs(self.paths, check_queries=False)
        errors = list(ps.errors)
        if not errors and ps.hash == self.current_hash:
            log.info("rule packs unchanged (hash %s); nothing to reload", ps.hash[:12])
            return False
        engine = extra = None
        try:  # built even for a set already rejected: the log lists EVERY error (query errors too)
            engine, extra = self.build(ps, self._last_engine)
        except Exception as exc:
            errors.append(f"cannot build the engine: {type(exc).__name__}: {exc}")
        else:
            errors.extend(engine.rule_errors)
        if errors:
            self.last_errors = errors
            log.error("rule pack reload rejected, %d error(s); the previous rules (hash %s) keep running:\n%s",
                      len(errors), self.current_hash[:12], "\n".join(str(e) for e in errors))
            self.outcomes["rejected"] += 1  # after the log: whoever sees the count finds the errors logged
            self._publish_outcomes()
            return False
        for w in engine.warnings:
            log.warning("%s", w)
        with self._lock:
            self._pending = Swap(engine, ps, extra or {}, changed_at)
        self.current_hash = ps.hash
        self._last_engine = engine
        return True

    def take(self) -> Swap | None:
        """Engine thread, between batches: the engine to switch to, if any."""
        if self._pending is None:
            return None
        with self._lock:
            swap, self._pending = self._pending, None
        return swap

    def applied(self, swap: Swap, kept: int, dropped: int) -> None:
        """Engine thread, after the switch: count, publish, log."""
        self.outcomes["applied"] += 1
        self._publish_outcomes()
        publish_packs(self.stats, swap.packset, len(swap.engine.rules))
        ms = (time.monotonic() - swap.changed_at) * 1000
        log.info("rule packs reloaded: %d rules, hash %s, %.0f ms after the change; %d pending sequences kept, "
                 "%d dropped (changed or removed rules)", len(swap.engine.rules), swap.packset.hash[:12], ms, kept,
                 dropped)

    def _publish_outcomes(self) -> None:
        with self.stats.lock:
            self.stats.extra.setdefault(METRICS_KEY, {})["kestrel_rule_reloads"] = {
                "type": "counter",
                "help": "Rule pack reloads, by outcome (rejected: the pack set had errors; the previous one runs on).",
                "labels": ("outcome",),
                "values": {(k,): self.outcomes[k] for k in ("applied", "rejected")},
            }
