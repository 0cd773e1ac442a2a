"""Every hook Kestrel defines, in one place, grouped by pipeline stage.

A Kestrel plugin is a module (named by a ``kestrel.plugins`` entry point)
holding ``@hookimpl`` functions.  Registration hooks receive a ``register``
callable and call it with component classes; they run once, when the profile
loads the plugin, and never on the per-event path.  Lifecycle hooks let a
plugin observe a run without being a component.

Hook arguments may grow in later versions; an implementation names only the
arguments it uses (pluggy passes just those).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import Action, Detector, Matcher, Normalizer, PredicateRuntime, Sink, Source
    from .runtime import RunContext
    from .schema import Schema

PROJECT = "kestrel"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# --------------------------------------------------------------------------- sources


@hookspec
def kestrel_register_sources(register: "Callable[[type[Source]], None]") -> None:
    """Register event source classes.

    :param register: call once per :class:`~kestrel_core.interfaces.Source`
        subclass; its ``PLUGIN_NAME`` is what a profile's ``[[sources]]``
        ``type`` names.  Two classes with one name are an error.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------- normalizers


@hookspec
def kestrel_register_normalizers(register: "Callable[[type[Normalizer]], None]") -> None:
    """Register normalizer classes (raw record -> typed :class:`~kestrel_core.event.Event`).

    :param register: call once per :class:`~kestrel_core.interfaces.Normalizer`
        subclass; a source names the normalizer it needs in ``NORMALIZER``.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------- matchers


@hookspec
def kestrel_register_matchers(register: "Callable[[type[Matcher]], None]") -> None:
    """Register matcher classes (candidate-rule pre-selection).

    :param register: call once per :class:`~kestrel_core.interfaces.Matcher` subclass.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------- predicate runtimes


@hookspec
def kestrel_register_runtimes(register: "Callable[[type[PredicateRuntime]], None]") -> None:
    """Register predicate runtime classes (host Python, Wasm, Lua, ...).

    :param register: call once per :class:`~kestrel_core.interfaces.PredicateRuntime`
        subclass; rules and the profile's ``[engine] runtime`` select one by name.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------- actions


@hookspec
def kestrel_register_actions(register: "Callable[[type[Action]], None]") -> None:
    """Register action classes (alert, kill, deny, quarantine).

    :param register: call once per :class:`~kestrel_core.interfaces.Action` subclass.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------- sinks


@hookspec
def kestrel_register_sinks(register: "Callable[[type[Sink]], None]") -> None:
    """Register sink classes (console, JSONL, Prometheus, ...).

    :param register: call once per :class:`~kestrel_core.interfaces.Sink` subclass.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------- detectors


@hookspec
def kestrel_register_detectors(register: "Callable[[type[Detector]], None]") -> None:
    """Register detector classes (behaviour baselines and other non-rule detection).

    :param register: call once per :class:`~kestrel_core.interfaces.Detector`
        subclass; its ``PLUGIN_NAME`` is what a profile's ``[[detectors]]``
        ``type`` names.

    .. versionadded:: 0.4
    """


# --------------------------------------------------------------------------- fields


@hookspec
def kestrel_declare_fields(schema: "Schema") -> None:
    """Declare the fields this plugin's events carry beyond the core ECS table
    (``schema.declare("process.Ext.exec_chain", FieldType.KEYWORD_LIST)``), so
    rules that name them compile, and are checked, before any component is
    built.  Called on the schema of every run, replay, ``kestrel rules
    check``/``rules test`` and ``kestrel eval`` (those three with every
    installed plugin).  Declaring a field that is already declared with the
    same type does nothing.

    :param schema: the :class:`~kestrel_core.schema.Schema` being prepared.

    .. versionadded:: 0.3
    """


# --------------------------------------------------------------------------- lifecycle


@hookspec
def kestrel_run_start(context: "RunContext") -> None:
    """Called after every component is built and opened, before the first event.

    :param context: the run's profile, schema, stats and components.

    .. versionadded:: 0.1
    """


@hookspec
def kestrel_run_stop(context: "RunContext", reason: str) -> None:
    """Called once after the last event is processed and sinks are flushed.

    :param context: the run's context; ``context.stats`` holds the final counts.
    :param reason: ``"eof"`` (inputs ended), ``"signal"`` (SIGINT/SIGTERM), ``"watchdog"`` (its
        last load-shedding step, kestrel_core/watchdog.py) or ``"error"``.

    .. versionadded:: 0.1
    """
