"""One interface per component role.

A plugin registers component *classes* through the ``kestrel_register_*``
hooks (see :mod:`kestrel_core.hookspecs`).  Each class carries ``PLUGIN_NAME``,
the name a profile writes (``type = "jsonl"``), and a ``Settings`` attrs class
describing the keys its profile table accepts; the profile loader validates
those keys and types before anything is constructed.

Hooks only register; the hot path calls component methods directly.
"""

from __future__ import annotations

import abc
import threading
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Collection, Iterable, Sequence

import attrs

if TYPE_CHECKING:  # pragma: no cover
    from .alert import Alert
    from .event import Event, Gap
    from .runtime import RunContext


@attrs.frozen
class Probe:
    """Result of a capability probe: can this component run on this host?"""

    available: bool
    reason: str = ""

    @classmethod
    def ok(cls, reason: str = "") -> "Probe":
        return cls(True, reason)

    @classmethod
    def missing(cls, reason: str) -> "Probe":
        return cls(False, reason)


@attrs.define(kw_only=True)
class NoSettings:
    """Settings of a component that takes none."""


class Component(abc.ABC):
    PLUGIN_NAME: ClassVar[str]
    """Name a profile uses to select this component (unique per role)."""
    ROLE: ClassVar[str]
    Settings: ClassVar[type] = NoSettings
    """attrs class: the keys (and their types) of the component's profile table."""
    DESCRIPTION: ClassVar[str] = ""

    def __init__(self, settings: Any, context: "RunContext") -> None:
        self.settings = settings
        self.context = context

    @classmethod
    def probe(cls) -> Probe:
        """Check, cheaply and without side effects, whether this host offers
        what the component needs (kernel feature, library, privilege)."""
        return Probe.ok()


# --------------------------------------------------------------------------- sources


@attrs.frozen
class EmittedKind:
    """One kind of event a source emits and the fields it carries
    (``Source.emitted_kinds``; ``kestrel fields`` lists them)."""

    name: str
    """The kind's name, e.g. ``exec`` (its ``event.action`` where it has a fixed one)."""
    category: str
    """Its ``event.category``."""
    fields: frozenset[str]
    """ECS paths events of this kind may carry (some only when the value exists, e.g. ``file.extension``)."""
    action: str | None = None
    """Its ``event.action`` value, when fixed per kind."""


EMITS_ANY = "any"
"""``Source.emitted_kinds()`` of a source whose input decides its fields (JSONL, a recorded log)."""


@attrs.frozen
class SourceCapabilities:
    categories: frozenset[str] = frozenset()
    """Event categories the source can produce here (empty: any)."""
    fields: frozenset[str] = frozenset()
    """ECS field paths it fills (empty: not declared)."""
    blocking_points: frozenset[str] = frozenset()
    """Operations it can hold and deny before they happen (e.g. ``file_open``)."""


@attrs.frozen
class LiteralFilter:
    """One step predicate of a loaded rule, reduced to what a source can test
    before normalizing: every constrained field must match (case-insensitive
    EQL wildcards) one of its patterns whenever the predicate is true."""

    category: str | None
    """The step's category; None for an ``any`` step."""
    constraints: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """``(field path, patterns)`` pairs; a field not listed may hold anything."""


@attrs.frozen
class Interest:
    """What the loaded rules need: pushed down so a source can drop the rest early."""

    categories: frozenset[str] = frozenset()
    """Categories any rule matches; ``any`` rules make ``wants_all`` true."""
    fields: frozenset[str] = frozenset()
    wants_all: bool = True
    filters: tuple[LiteralFilter, ...] | None = None
    """One per distinct step predicate (``kestrel_core.eql.pushdown``): an
    event no filter admits cannot match any rule.  None: not computed, so a
    source may filter by ``categories`` only."""


Emit = Callable[[Any], bool]
"""Hands one raw record to the pipeline; returns False when the bus dropped it."""


class Source(Component):
    """Produces raw records.  ``run`` is called on a thread of its own and
    returns when the input ends or ``stop`` is set."""

    ROLE = "source"
    NORMALIZER: ClassVar[str] = "ecs-json"
    """Name of the normalizer that turns this source's records into events."""

    def capabilities(self) -> SourceCapabilities:
        return SourceCapabilities()

    @classmethod
    def emitted_kinds(cls) -> "tuple[EmittedKind, ...] | str | None":
        """The kinds of event this source emits, each with its fields, known
        without building it: a tuple of :class:`EmittedKind`, ``EMITS_ANY``
        when the input decides (JSONL, a recorded log), or None (the default)
        when the source does not declare them.  ``kestrel fields`` lists them
        and ``kestrel rules check`` warns about a rule reading a field that no
        declaring source emits."""
        return None

    def set_interest(self, interest: Interest) -> None:
        """Push-down of rule interest; sources that cannot filter ignore it."""

    @abc.abstractmethod
    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Read records and ``emit`` each one until the input ends or ``stop`` is set."""

    def progress(self) -> tuple[int, int] | None:
        """``(done, total)`` in any unit (bytes for files) for a progress bar, or None."""
        return None

    def describe_record(self, record: Any) -> str:
        """Where a record came from, for error messages (``file:line``)."""
        return self.PLUGIN_NAME


# --------------------------------------------------------------------------- normalizers


class NormalizeError(ValueError):
    """A record that cannot become an event; the message names the problem."""


class Normalizer(Component):
    ROLE = "normalizer"

    @abc.abstractmethod
    def normalize(self, record: Any, source_id: str) -> "Event":
        """Build a typed event; raise NormalizeError for a bad record."""

    def set_interest(self, interest: "Interest | None") -> None:
        """The rules' interest (None: build whole events).  A normalizer may
        then give events with only ``interest.fields`` (plus time and
        category) whose ``settle()`` completes them; the engine settles the
        events of every alert.  The default ignores it.

        .. versionadded:: issue 16"""


# --------------------------------------------------------------------------- matchers


class Matcher(Component):
    """Pre-selects, per batch, which predicates are worth evaluating on which
    events (category index, literal prefilter, DFA).  Must never drop a
    candidate that could match: the engine evaluates the full predicate on
    every candidate, so a matcher only trades precision for speed.

    The engine groups each batch by category and asks the matcher once per
    group.  Predicates of ``any`` rules (category None) are not the
    matcher's business: the engine runs them on the whole batch.
    """

    ROLE = "matcher"

    @abc.abstractmethod
    def build(self, predicates: Sequence[Any], schema: Any) -> None:
        """Index the distinct predicates of the loaded rules.

        :param predicates: ``(predicate id, query IR, root node id, category)``
            per predicate (``kestrel_core.eql.ir``; see docs/ir.md).  Ids are
            small integers, unique per engine.
        :param schema: the run's :class:`~kestrel_core.schema.Schema`.
        """

    @abc.abstractmethod
    def candidates(self, category: str, events: Sequence["Event"]) -> Iterable[tuple[int, Sequence[int] | None]]:
        """Candidates among ``events`` (all of category ``category``, in order).

        :return: ``(predicate id, sorted positions in events)`` for each
            predicate of this category that may match some of them, with
            ``None`` for "every event"; a predicate not yielded matches none.
        """


# --------------------------------------------------------------------------- predicate runtimes


class PredicateRuntime(Component):
    """Compiles rule predicates (IR, docs/ir.md) and evaluates them over a
    *batch* of events per call: crossing into Wasm or Lua costs microseconds,
    so one call must cover many events."""

    ROLE = "runtime"

    @abc.abstractmethod
    def compile(self, predicate: Any, schema: Any) -> "CompiledPredicate":
        """Compile one predicate once, at rule load.

        :param predicate: a :class:`kestrel_core.eql.ir.Predicate` (the node
            DAG, the root node id and the step's category).
        :param schema: the run's :class:`~kestrel_core.schema.Schema`.
        :return: the compiled predicate; raise to reject the rule (the engine
            reports it as a rule error and keeps the others).
        """


class CompiledPredicate(abc.ABC):
    @abc.abstractmethod
    def eval_batch(self, events: Sequence["Event"]) -> list[bool]:
        """Truth of the predicate for each event: its category matches (any
        value of a multi-valued category field; always for ``any``) and the
        condition is true (null counts as false)."""


@attrs.define
class RuleSetResult:
    """What a compiled rule set returns for one batch."""

    hits: dict[int, list[int]] = attrs.Factory(dict)
    """Unit id -> ascending positions (in the events passed) of the events it matches."""
    failed: dict[int, str] = attrs.Factory(dict)
    """Unit id -> reason it was stopped (``budget_instructions``, ``budget_fuel``,
    ``budget_time``, ``memory``, ``error``); the engine disables the rules
    using it.  ``hits`` is complete for every other unit."""


class CompiledRuleSet(abc.ABC):
    """Every unit of a rule set that one runtime evaluates, compiled together
    (Predicate ABI v1, docs/predicate-abi.md)."""

    @abc.abstractmethod
    def eval_units(self, events: Sequence["Event"], enabled: "Collection[int] | None" = None) -> RuleSetResult:
        """Evaluate the units (those in ``enabled``; None: all) over one batch,
        in one call into the runtime."""


class RuleSetRuntime(PredicateRuntime):
    """A runtime that compiles a whole rule set at once and evaluates a batch
    per call (Lua, Wasm): crossing into it costs microseconds, so the engine
    hands it every unit of the rules that use it and calls it once per batch,
    not once per rule."""

    @abc.abstractmethod
    def compile_rule_set(self, units: Sequence[Any], schema: Any, *,
                         category_field: str = "event.category") -> CompiledRuleSet:
        """Compile the rule set once per pack version.

        :param units: :class:`kestrel_core.eql.abi.AbiUnit` per distinct step
            predicate (id, category, IR nodes, root).
        :raise kestrel_core.eql.abi.UnitRejected: for units it cannot compile
            (the engine reports those rules and compiles the rest again).
        """

    def check_unit(self, unit: Any, schema: Any) -> None:
        """Reject one unit early (raise with the reason); called per rule at load."""


# --------------------------------------------------------------------------- actions


class Action(Component):
    """What happens on a match.  In replay mode actions are simulated: they
    record what they would have done in ``alert.actions`` and do nothing."""

    ROLE = "action"

    @abc.abstractmethod
    def execute(self, alert: "Alert", simulate: bool) -> str:
        """Act on an alert; return a one-line record of what was (or would be) done."""


# --------------------------------------------------------------------------- sinks


class Sink(Component):
    """Receives alerts (and, if it wants, every processed batch of events).
    Counters (events, drops, queue depth) live in ``context.stats`` for sinks
    that export metrics."""

    ROLE = "sink"

    def open(self) -> None:
        """Acquire resources (files, sockets) before the first event."""

    @abc.abstractmethod
    def write_alert(self, alert: "Alert") -> None:
        """One alert, in detection order."""

    def write_events(self, events: Sequence["Event"]) -> None:
        """A processed batch; most sinks ignore it."""

    def write_gap(self, gap: "Gap") -> None:
        """Events a source lost (``kestrel_core.event.Gap``); most sinks ignore it."""

    def write_incident(self, record: dict[str, Any]) -> None:
        """One incident record (``{"incident": {...}}``, docs/incidents.md): an
        incident opened, updated by a new alert or closed, after the alert that
        caused it.  Only when ``[incidents] enable``; the default ignores it, so a
        sink written before incidents existed keeps working."""

    def flush(self) -> None:
        """Make everything written so far durable/visible."""

    def close(self) -> None:
        """Release resources; called once, after the final flush."""


# --------------------------------------------------------------------------- detectors


class Detector(Component):
    """Finds what rules cannot express (a learned behaviour baseline): sees
    every processed batch after the engine, on the engine thread, and returns
    alerts that go to actions and sinks like rule alerts.  Use event time,
    never the wall clock, so a replay gives the same alerts.  A detector that
    raises is logged and counted (``stats.detector_errors``); the run goes on."""

    ROLE = "detector"
    CATEGORIES: ClassVar[frozenset[str]] = frozenset()
    """Event categories it needs from sources (empty: all).  The rules'
    push-down is widened to them, so a source does not drop what only a
    detector reads."""

    def open(self) -> None:
        """Acquire resources (load a saved state) before the first batch."""

    @abc.abstractmethod
    def process(self, events: Sequence["Event"]) -> "list[Alert]":
        """One processed batch, in order; return its alerts (often none)."""

    def flush(self) -> "list[Alert]":
        """The inputs ended: alerts still pending, and save state."""
        return []

    def close(self) -> None:
        """Release resources; called once, after ``flush``."""


ROLES: dict[str, type[Component]] = {
    "source": Source,
    "normalizer": Normalizer,
    "matcher": Matcher,
    "runtime": PredicateRuntime,
    "action": Action,
    "sink": Sink,
    "detector": Detector,
}
