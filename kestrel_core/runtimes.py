"""Finding predicate runtimes by name for the commands that build an engine
without a profile (``kestrel eval``, ``replay``, ``rules check|test``) and
for a run whose rules name runtimes the profile does not default to.

A runtime named ``NAME`` is looked up in the plugin conventionally called
``runtime-NAME`` first (one import), then in every installed plugin.  A
runtime that is not installed, or whose probe fails (LuaJIT missing), is
*unavailable*: rules naming it are located errors, or run on the host
runtime when the caller allows the fallback (``[engine] runtime_fallback``).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Iterable, Mapping

import attrs

from .interfaces import PredicateRuntime
from .plugins import PluginHost

log = logging.getLogger("kestrel")

HOST = "host"


@attrs.define
class Runtimes:
    """Runtimes ready for a :class:`~kestrel_core.eql.engine.DetectionEngine`."""

    by_name: dict[str, PredicateRuntime]
    unavailable: dict[str, str]
    """name -> why it cannot run here."""
    default: str = HOST

    def engine_kwargs(self) -> dict[str, Any]:
        """``runtime=``, ``default_runtime=`` and ``unavailable_runtimes=`` for the engine."""
        return {"runtime": dict(self.by_name), "default_runtime": self.default,
                "unavailable_runtimes": dict(self.unavailable)}


def _settings(cls: type, overrides: Mapping[str, Any]) -> Any:
    names = {f.name for f in attrs.fields(cls.Settings)} if attrs.has(cls.Settings) else set()
    return cls.Settings(**{k: v for k, v in overrides.items() if k in names})


def find_runtime(name: str, host: PluginHost | None = None) -> tuple[type | None, str]:
    """(class, "") or (None, why it is unavailable).  With ``host`` (a run):
    only the plugins it loaded; without: the core, then the plugin named
    ``runtime-NAME``, then every installed plugin."""
    if host is not None:
        comp = host.registry.by_role["runtime"].get(name)
        if comp is None:
            return None, (f"no loaded plugin provides it (add 'runtime-{name}' to [kestrel] plugins; "
                          f"loaded: {', '.join(host.loaded)})")
        cls = comp.cls
    else:
        cls = _installed_runtime(name)
        if cls is None:
            from importlib.metadata import entry_points

            from .plugins import ENTRY_POINT_GROUP

            plugins = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            return None, f"no installed plugin provides it (installed plugins: {', '.join(plugins)})"
    try:
        probe = cls.probe()
    except Exception as exc:  # a probe must not take the command down
        return None, f"its probe raised {type(exc).__name__}: {exc}"
    if not probe.available:
        return None, probe.reason or "its probe failed"
    return cls, ""


@functools.lru_cache(maxsize=None)  # installed classes do not change within a process
def _installed_runtime(name: str) -> type | None:
    from importlib.metadata import entry_points

    from .plugins import ENTRY_POINT_GROUP

    for optional in ([], [f"runtime-{name}"], sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))):
        host = PluginHost()
        host.load([], optional=optional)
        comp = host.registry.by_role["runtime"].get(name)
        if comp is not None:
            return comp.cls
    return None


def runtime_option(help_text: str = "Predicate runtime for rules that name none (host, lua, wasm, ...; "
                                    "default: host).") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--runtime NAME`` (the profile's ``[engine] runtime``)."""
    import click

    return click.option("--runtime", "runtime", default=None, metavar="NAME", help=help_text)


def resolve(default: str, rules: Iterable[Any] = (), *, context: Any = None,
            settings: Mapping[str, Mapping[str, Any]] | None = None, host: PluginHost | None = None,
            common: Mapping[str, Any] | None = None) -> Runtimes:
    """The default runtime and every runtime a rule names, instantiated.

    :param default: the runtime for rules that name none (``--runtime``,
        ``[engine] runtime``); unavailable is an error (ValueError).
    :param settings: per runtime name, its settings (keys of its ``Settings``).
    :param common: settings applied to every runtime that has such a key
        (``deterministic = True`` for replay).
    :raise ValueError: the default runtime is unavailable (with the reason).
    """
    settings = settings or {}
    names = [default] + sorted({r.runtime for r in rules if getattr(r, "runtime", None)} - {default})
    by_name: dict[str, PredicateRuntime] = {}
    unavailable: dict[str, str] = {}
    for name in names:
        cls, why = find_runtime(name, host)
        if cls is None:
            if name == default:
                raise ValueError(f"predicate runtime {name!r} is not available: {why}")
            unavailable[name] = why
            continue
        given = settings.get(name, {})
        if attrs.has(type(given)):  # already validated by the profile
            names = {f.name for f in attrs.fields(type(given))}
            built = attrs.evolve(given, **{k: v for k, v in (common or {}).items() if k in names})
        else:
            built = _settings(cls, {**(common or {}), **given})
        by_name[name] = cls(built, context)
    return Runtimes(by_name, unavailable, default)


DISABLED_METRIC = "kestrel_rule_disabled_total"


def publish_disabled(stats: Any, disabled: Mapping[tuple[str, str], int]) -> None:
    """``kestrel_rule_disabled_total{rule,reason}`` through ``stats.extra["metrics"]``
    (exported by sink-prometheus like every published counter)."""
    with stats.lock:
        metrics = stats.extra.setdefault("metrics", {})
        metrics[DISABLED_METRIC] = {
            "type": "counter",
            "help": "Rules disabled while running (a predicate over its budget or raising), by reason.",
            "labels": ("rule", "reason"),
            "values": dict(disabled),
        }
