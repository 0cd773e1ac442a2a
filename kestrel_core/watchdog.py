"""The agent's own watchdog (``[watchdog]``): memory and CPU limits enforced by
shedding load in the profile's order, before the kernel's OOM killer (the
systemd unit's ``MemoryMax``) would end the process mid-write.

Runs on the engine thread between batches (every ``interval_s``; reading
``/proc/self/statm`` and ``os.times()`` costs microseconds), so every step
happens between two batches and no sink is cut off mid-alert.

Memory: step *i* of ``shed_order`` is taken when RSS reaches
``shed_levels[i] * memory_mb`` (kept for the rest of the run: CPython seldom
gives freed memory back, so RSS would not say when to undo it).  CPU: over
``cpu_percent`` for ``cpu_windows`` windows in a row, the next step but
``stop`` is taken; under half of it for as many windows, the last one taken
for CPU is given back.

Steps:

* ``low_priority_packs``: the rules of packs whose ``priority`` is below
  ``low_priority_below`` stop and their sequence state is freed
  (``kestrel_rule_disabled_total{reason="watchdog"}``, evictions
  ``watchdog``);
* ``sample``: one batch in ``sample_every`` is evaluated, the others are
  counted as dropped (reason ``watchdog_sample``);
* ``stop``: a graceful stop: batches still queued are counted as dropped
  (``watchdog_stop``) rather than evaluated, the engine is flushed, sinks
  drain, flush and close; ``kestrel run`` exits with status 75 (EX_TEMPFAIL)
  so a service manager restarts it.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from typing import Any, Callable

log = logging.getLogger("kestrel")

EXIT_WATCHDOG = 75
"""``kestrel run``'s exit status after a watchdog stop (EX_TEMPFAIL: restart me)."""

_PAGE = os.sysconf("SC_PAGE_SIZE")


def read_rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def process_cpu() -> float:
    """CPU seconds (user + system) this process used."""
    t = os.times()
    return t.user + t.system


class Watchdog:
    def __init__(self, settings: Any, stats: Any, *, rss: Callable[[], int] = read_rss,
                 cpu: Callable[[], float] = process_cpu, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.stats = settings, stats
        self.rss, self.cpu, self.clock = rss, cpu, clock
        self.taken: dict[str, str] = {}
        """step -> trigger (``memory`` or ``cpu``), in the order taken."""
        self.shed_total: collections.Counter = collections.Counter()
        """(step, trigger) -> times taken."""
        self.shed_rules: list[str] = []
        self.partials_dropped = 0
        self.last_rss = 0
        self.peak_rss = 0
        self.last_cpu_ratio = 0.0
        self.events: list[str] = []
        """What happened, in words (stop summary, ``kestrel top``)."""
        self._batches = 0
        self._last = -1e18
        self._cpu_mark: tuple[float, float] | None = None
        self._over = self._under = 0
        self.engine: Any = None

    @property
    def enabled(self) -> bool:
        return self.settings.memory_mb > 0 or self.settings.cpu_percent > 0

    # ------------------------------------------------------------ engine thread
    def tick(self, run: Any) -> None:
        if run.engine is not self.engine:  # start or hot reload: shed packs stay shed
            self.engine = run.engine
            if "low_priority_packs" in self.taken:
                self._shed_packs(run)
        now = self.clock()
        if now - self._last < self.settings.interval_s:
            return
        self._last = now
        s = self.settings
        rss = self.rss()
        self.last_rss, self.peak_rss = rss, max(self.peak_rss, rss)
        if s.memory_mb > 0:
            limit = s.memory_mb * 2 ** 20
            for step, level in zip(s.shed_order, s.shed_levels):
                if rss >= level * limit and step not in self.taken:
                    self._take(step, "memory", run, f"RSS {rss / 2**20:.0f} MB reached {level:.0%} of the "
                                                    f"{s.memory_mb:g} MB limit")
        cpu_now = self.cpu()
        if self._cpu_mark is not None and now > self._cpu_mark[0]:
            ratio = (cpu_now - self._cpu_mark[1]) / (now - self._cpu_mark[0])
            self.last_cpu_ratio = ratio
            if s.cpu_percent > 0:
                self._judge_cpu(ratio, run)
        self._cpu_mark = (now, cpu_now)

    def _judge_cpu(self, ratio: float, run: Any) -> None:
        s = self.settings
        limit = s.cpu_percent / 100
        self._over = self._over + 1 if ratio > limit else 0
        self._under = self._under + 1 if ratio < limit / 2 else 0
        if self._over >= s.cpu_windows:
            self._over = 0
            step = next((st for st in s.shed_order if st != "stop" and st not in self.taken), None)
            if step is not None:
                self._take(step, "cpu", run, f"CPU {ratio:.0%} of a core over the {s.cpu_percent:g}% limit "
                                             f"for {s.cpu_windows} windows")
        elif self._under >= s.cpu_windows:
            self._under = 0
            mine = [st for st, why in self.taken.items() if why == "cpu" and st == "sample"]
            if mine:  # stopped packs keep no state to come back with: only sampling is given back
                del self.taken[mine[-1]]
                self._say(f"sample given back: CPU {ratio:.0%} under half the {s.cpu_percent:g}% limit")

    def _take(self, step: str, trigger: str, run: Any, reason: str) -> None:
        self.taken[step] = trigger
        self.shed_total[(step, trigger)] += 1
        if step == "low_priority_packs":
            n_rules, n_partials = self._shed_packs(run)
            reason += f": {n_rules} rule(s) of low-priority packs stopped, {n_partials:,} sequence state(s) freed"
        elif step == "sample":
            reason += f": evaluating 1 batch in {self.settings.sample_every}, the others counted as dropped"
        elif step == "stop":
            reason += ": graceful stop, sinks flushed"
            run.request_stop("watchdog")
        self._say(f"watchdog: {step} ({reason})", logging.ERROR if step == "stop" else logging.WARNING)

    def _say(self, text: str, level: int = logging.WARNING) -> None:
        self.events.append(text)
        log.log(level, "%s", text)

    def _shed_packs(self, run: Any) -> tuple[int, int]:
        below = self.settings.low_priority_below
        low = {p.name for p in getattr(run.packset, "packs", ()) if p.priority < below}
        n_rules = n_partials = 0
        for cr in list(run.engine.rules):
            if cr.rule.pack in low:
                dropped = run.engine.shed(cr.id, "watchdog")
                if dropped is not None:
                    n_rules += 1
                    n_partials += dropped
                    self.shed_rules.append(cr.id)
        self.partials_dropped += n_partials
        return n_rules, n_partials

    def drop(self, batch: list[Any]) -> str | None:
        """Before the engine sees ``batch``: the reason to count it as dropped
        instead (``watchdog_sample``, ``watchdog_stop``), or None."""
        if "stop" in self.taken:
            return "watchdog_stop"
        if "sample" in self.taken:
            self._batches += 1
            if self._batches % self.settings.sample_every:
                return "watchdog_sample"
        return None

    # ------------------------------------------------------------ any thread
    def snapshot(self) -> dict[str, Any]:
        s = self.settings
        return {"rss_bytes": self.last_rss, "peak_rss_bytes": self.peak_rss, "cpu_ratio": self.last_cpu_ratio,
                "memory_limit_bytes": int(s.memory_mb * 2 ** 20), "cpu_limit_percent": s.cpu_percent,
                "shed": dict(self.taken), "shed_rules": list(self.shed_rules),
                "partials_dropped": self.partials_dropped, "events": self.events[-10:]}

    def publish(self) -> None:
        with self.stats.lock:
            m = self.stats.extra.setdefault("metrics", {})
            m["kestrel_watchdog_shed_total"] = {
                "type": "counter", "labels": ("step", "trigger"), "values": lambda: dict(self.shed_total),
                "help": "Load-shedding steps the watchdog took ([watchdog] shed_order), by trigger (memory, cpu)."}
            m["kestrel_watchdog_rss_bytes"] = {
                "type": "gauge", "values": lambda: self.last_rss,
                "help": "Resident memory at the watchdog's last reading."}
            m["kestrel_watchdog_shedding"] = {
                "type": "gauge", "labels": ("step",), "values": lambda: {(st,): 1 for st in self.taken},
                "help": "1 for each load-shedding step in force."}

    def summary(self) -> list[str]:
        lines = list(self.events)
        if self.peak_rss and self.enabled:
            lines.append(f"watchdog: peak RSS {self.peak_rss / 2**20:.0f} MB"
                         + (f" (limit {self.settings.memory_mb:g} MB)" if self.settings.memory_mb else ""))
        return lines
