"""Plugin discovery and component registration.

How stevedore and pluggy fit (docs/architecture.md has the picture):

* Discovery and named loading - stevedore.  A plugin is a distribution with an
  entry point in the ``kestrel.plugins`` group.  The entry-point *name* is the
  plugin name a profile lists (``plugins = ["sink-prometheus"]``); only those
  names (plus the built-in ``core``) are imported, so a broken plugin that no
  profile selects does no harm.
* Hooks - pluggy.  Each loaded entry point is a module of ``@hookimpl``
  functions, registered with one PluginManager; ``check_pending()`` makes an
  implementation without a spec an error.  The ``kestrel_register_*`` hooks
  hand component classes to a :class:`ComponentRegistry`, once, at start-up.
"""

from __future__ import annotations

import difflib
import functools
import logging
from typing import Any, Callable, Iterable

import attrs
import pluggy

from . import hookspecs
from .interfaces import ROLES, Component, Probe

log = logging.getLogger("kestrel")

ENTRY_POINT_GROUP = "kestrel.plugins"
BUILTIN_PLUGIN = "core"

_REGISTER_HOOKS = {
    "source": "kestrel_register_sources",
    "normalizer": "kestrel_register_normalizers",
    "matcher": "kestrel_register_matchers",
    "runtime": "kestrel_register_runtimes",
    "action": "kestrel_register_actions",
    "sink": "kestrel_register_sinks",
}


class PluginError(Exception):
    """A selected plugin is missing, broken, or registers something invalid."""


def distribution_hint(plugin: str) -> str:
    """Distribution that conventionally ships ``plugin`` (used in hints)."""
    return f"kestrel-{plugin}"


@attrs.define
class RegisteredComponent:
    cls: type[Component]
    plugin: str

    @property
    def name(self) -> str:
        return self.cls.PLUGIN_NAME


@attrs.define
class ComponentRegistry:
    """role -> component name -> class (and which plugin registered it)."""

    by_role: dict[str, dict[str, RegisteredComponent]] = attrs.Factory(lambda: {r: {} for r in ROLES})

    def add(self, role: str, cls: Any, plugin: str) -> None:
        base = ROLES[role]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(f"plugin {plugin!r} registered {cls!r} as a {role}, but it is not a {base.__name__} subclass")
        name = getattr(cls, "PLUGIN_NAME", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r}: {cls.__qualname__} has no PLUGIN_NAME")
        known = self.by_role[role].get(name)
        if known is not None and known.cls is not cls:
            raise PluginError(
                f"{role} {name!r} is registered twice: by plugin {known.plugin!r} ({known.cls.__qualname__}) "
                f"and by plugin {plugin!r} ({cls.__qualname__})"
            )
        self.by_role[role][name] = RegisteredComponent(cls, plugin)

    def get(self, role: str, name: str) -> RegisteredComponent:
        found = self.by_role[role].get(name)
        if found is None:
            choices = sorted(self.by_role[role])
            close = difflib.get_close_matches(name, choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            avail = ", ".join(choices) or "none"
            raise KeyError(
                f"no {role} named {name!r} in the loaded plugins (available: {avail}){hint} "
                f"- a component from another plugin needs that plugin in [kestrel] plugins"
            )
        return found

    def components(self, plugin: str | None = None) -> Iterable[tuple[str, RegisteredComponent]]:
        for role, comps in self.by_role.items():
            for comp in comps.values():
                if plugin is None or comp.plugin == plugin:
                    yield role, comp


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


class PluginHost:
    """Loads the named plugins and collects their components."""

    def __init__(self) -> None:
        self.pm = _new_manager()
        self.registry = ComponentRegistry()
        self.loaded: list[str] = []
        self.unavailable: dict[str, str] = {}
        """Optional plugins that could not be loaded -> why (missing, broken)."""

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def load(self, names: Iterable[str], optional: Iterable[str] = ()) -> None:
        """Import and register ``core`` plus ``names``; raise PluginError on the
        first missing or broken plugin, naming it and the cause.  ``optional``
        plugins are loaded when installed and working; otherwise the reason is
        kept in ``unavailable`` (a profile falls back from their components)."""
        from stevedore import NamedExtensionManager

        wanted = [BUILTIN_PLUGIN] + [n for n in names if n != BUILTIN_PLUGIN]
        maybe = [n for n in optional if n not in wanted]
        failures: dict[str, str] = {}

        def on_failure(_manager: Any, entry_point: Any, exc: BaseException) -> None:
            failures[entry_point.name] = f"plugin {entry_point.name!r} failed to load: {type(exc).__name__}: {exc}"

        manager = NamedExtensionManager(
            ENTRY_POINT_GROUP,
            names=wanted + maybe,
            invoke_on_load=False,
            name_order=True,
            on_load_failure_callback=on_failure,
        )
        for name in wanted:
            if name in failures:
                raise PluginError(failures[name])
        found = {ext.name for ext in manager}
        for name in wanted:
            if name not in found:
                raise PluginError(f"plugin {name!r} is not installed: pip install {distribution_hint(name)}")
        for name in maybe:
            if name not in found:
                self.unavailable[name] = failures.get(name) or (
                    f"plugin {name!r} is not installed (pip install {distribution_hint(name)})")
        for ext in manager:
            try:
                self.add_module(ext.name, ext.plugin)
            except PluginError as exc:
                if ext.name not in maybe:
                    raise
                self.unavailable[ext.name] = str(exc)

    def add_module(self, name: str, module: Any) -> None:
        """Register one plugin module (also how tests add a plugin without
        installing a distribution) and collect its components."""
        if self.pm.get_plugin(name) is not None:
            return
        self.pm.register(module, name=name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            raise PluginError(f"plugin {name!r}: {exc}") from None
        self._collect(name)
        self.loaded.append(name)

    def _collect(self, plugin: str) -> None:
        for role, hook_name in _REGISTER_HOOKS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                if impl.plugin_name != plugin:
                    continue
                register: Callable[[Any], None] = lambda cls, _r=role: self.registry.add(_r, cls, plugin)
                kwargs = {"register": register}
                impl.function(*[kwargs[a] for a in impl.argnames])


def declare_plugin_fields(schema: Any, host: PluginHost, *, strict: bool = True) -> Any:
    """Let every plugin of ``host`` declare its fields on ``schema``
    (``kestrel_declare_fields``).  A plugin whose declaration fails (a type
    that clashes with another plugin's) is a PluginError naming it, or, not
    ``strict``, a logged warning and its fields are skipped."""
    for impl in host.hook.kestrel_declare_fields.get_hookimpls():
        try:
            impl.function(schema=schema)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug, named
            why = f"plugin {impl.plugin_name!r} could not declare its fields: {type(exc).__name__}: {exc}"
            if strict:
                raise PluginError(why) from None
            log.warning("%s", why)
    return schema


@functools.lru_cache(maxsize=1)
def _installed_fields() -> tuple[tuple[str, Any], ...]:
    from importlib.metadata import entry_points

    from .schema import Schema

    host = PluginHost()
    host.load([], optional=sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}))
    core = Schema.ecs()
    declared = declare_plugin_fields(Schema.ecs(), host, strict=False)
    return tuple((f.path, f.type) for f in declared
                 if f.declared and (f.path not in core or core.get(f.path).type is not f.type))


def rules_schema() -> Any:
    """The ECS schema plus the fields every installed plugin declares: what
    ``rules check``, ``rules test``, ``eval`` and ``replay`` compile rules
    against (a run uses its profile's plugins).  Plugins that fail to load
    are skipped, as ``plugins list`` reports them."""
    from .schema import Schema

    schema = Schema.ecs()
    for path, ftype in _installed_fields():
        schema.declare(path, ftype)
    return schema


@attrs.define
class PluginReport:
    """What ``kestrel plugins list`` shows for one installed plugin."""

    name: str
    distribution: str
    version: str
    error: str = ""
    components: list[tuple[str, str, Probe]] = attrs.Factory(list)
    """(role, component name, probe result)."""


def installed_plugins() -> list[PluginReport]:
    """Every ``kestrel.plugins`` entry point, loaded in isolation (one broken
    plugin is reported, not fatal), with each component's capability probe."""
    from importlib.metadata import entry_points

    reports = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name != BUILTIN_PLUGIN, e.name)):
        dist = getattr(ep, "dist", None)
        report = PluginReport(ep.name, dist.name if dist else "?", dist.version if dist else "?")
        reports.append(report)
        host = PluginHost()
        try:
            host.add_module(ep.name, ep.load())
        except Exception as exc:  # reported, not fatal: listing must survive a broken plugin
            report.error = f"{type(exc).__name__}: {exc}"
            continue
        for role, comp in host.registry.components(ep.name):
            try:
                probe = comp.cls.probe()
            except Exception as exc:
                probe = Probe.missing(f"probe raised {type(exc).__name__}: {exc}")
            report.components.append((role, comp.name, probe))
    return reports
