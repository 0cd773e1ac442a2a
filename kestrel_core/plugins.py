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
    "detector": "kestrel_register_detectors",
}


class PluginError(Exception):
    """A selected plugin is missing, broken, or registers something invalid.
    ``plugin``: the plugin at fault, when one is; ``hint``: what to do about it."""

    def __init__(self, message: str, *, plugin: str | None = None, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.plugin, self.hint = message, plugin, hint


# --------------------------------------------------------------------------- names in hints
#
# A hint may name a package to install.  Only the project's own distributions
# are ever named: a name built from what a user typed (``kestrel-<typo>``)
# would invite installing whatever squats that name on the package index.

CORE_DISTRIBUTIONS = ("kestrel-edr", "kestrel")
"""The core's distribution name, then its name before the rename (for version look-ups)."""
PLUGIN_DISTRIBUTION_PREFIX = "kestrel-edr-"
"""Kestrel's plugin in ``plugins/<name>`` is the distribution ``kestrel-edr-<name>``."""
_OLD_DISTRIBUTION_PREFIXES = ("kestrel-edr-", "kestrel-")

KNOWN_PLUGINS: dict[str, tuple[tuple[str, str], ...]] = {
    "sources-ebpf": (("source", "ebpf"), ("normalizer", "ebpf")),
    "sources-portable": (("source", "portable"),),
    "sources-fanotify": (("source", "fanotify"),),
    "sources-falco": (("source", "falco"),),
    "actions-enforce": (("action", "enforce"),),
    "sink-prometheus": (("sink", "prometheus"),),
    "runtime-lua": (("runtime", "lua"),),
    "runtime-wasm": (("runtime", "wasm"),),
    "matcher-acdfa": (("matcher", "acdfa"),),
    "api-server": (("sink", "api"),),
    "detector-baseline": (("detector", "baseline"),),
}
"""Kestrel's own plugins (``plugins/<name>``, entry-point name = directory
name) and the (role, component) pairs each registers: hints can then name the
plugin that brings a component, installed or not (a test keeps this in step
with the plugins' own registrations)."""


def distribution_of(plugin: str) -> str | None:
    """The distribution of one of Kestrel's own plugins; None for any other name."""
    return PLUGIN_DISTRIBUTION_PREFIX + plugin if plugin in KNOWN_PLUGINS else None


def install_hint(plugin: str) -> str:
    """How to install one of Kestrel's own plugins ("" for any other)."""
    dist = distribution_of(plugin)
    if dist is None:
        return ""
    return f"pip install {dist} (from a Kestrel checkout: pip install ./plugins/{plugin})"


def installed_plugin_names() -> set[str]:
    """Entry-point names in ``kestrel.plugins`` (nothing is imported)."""
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _as_plugin_name(name: str) -> str:
    """``kestrel-edr-sink-prometheus`` / ``kestrel_sink_prometheus`` -> ``sink-prometheus``."""
    norm = name.strip().lower().replace("_", "-")
    for prefix in _OLD_DISTRIBUTION_PREFIXES:
        if norm.startswith(prefix) and len(norm) > len(prefix):
            return norm[len(prefix):]
    return norm


def missing_plugin(name: str, installed: Iterable[str] | None = None) -> tuple[str, str]:
    """(message, hint) for a plugin name that is not installed: the plugin a
    distribution name stands for, the nearest installed or known plugin name,
    or how to install one of Kestrel's own plugins; never a guessed package."""
    installed = set(installed_plugin_names() if installed is None else installed) | {BUILTIN_PLUGIN}
    message = f"plugin {name!r} is not installed"
    plugin = _as_plugin_name(name)
    if plugin != name and (plugin in installed or plugin in KNOWN_PLUGINS):
        spelt = name.strip().lower().replace("_", "-")
        if spelt == plugin:  # only case or underscores differ
            hint = f"plugin names are lower case with hyphens: write {plugin!r}"
        else:
            hint = f"{name!r} is a distribution name; the plugin is called {plugin!r}: write {plugin!r}"
        if plugin not in installed:
            hint += f" and install it: {install_hint(plugin)}"
        return message, hint
    if name in KNOWN_PLUGINS:
        return message, f"it is Kestrel's plugin {name!r}, distribution {distribution_of(name)}: {install_hint(name)}"
    close = difflib.get_close_matches(plugin, sorted(installed | set(KNOWN_PLUGINS)), n=1, cutoff=0.75)
    if close:
        hint = f"did you mean {close[0]!r}?"
        if close[0] not in installed:
            hint += f" (not installed either: {install_hint(close[0])})"
        return message, hint
    others = [p for p in KNOWN_PLUGINS if p not in installed]
    return message, (f"installed plugins: {', '.join(sorted(installed))}"
                     + (f"; Kestrel's plugins not installed: {', '.join(others)}" if others else ""))


def component_hint(role: str, name: str, loaded: Iterable[str], unavailable: dict[str, str]) -> str:
    """Why no loaded plugin offers the ``role`` component ``name`` and what to
    do: the plugin that brings it (or a near name) when it is one of Kestrel's,
    optional plugins that did not load, else that its plugin must be listed."""
    loaded = set(loaded)
    owners = {comp: plugin for plugin, comps in KNOWN_PLUGINS.items() for r, comp in comps if r == role}
    target = name if name in owners else next(iter(difflib.get_close_matches(name, list(owners), n=1)), None)
    if target is not None and owners[target] not in loaded:
        plugin = owners[target]
        lead = f"did you mean {target!r}? it" if target != name else f"{role} {name!r}"
        if plugin in unavailable:
            return f"{lead} comes with plugin {plugin!r}, which is in optional_plugins but did not load: " \
                   f"{unavailable[plugin]}"
        hint = f"{lead} comes with plugin {plugin!r}: list it in [kestrel] plugins"
        if plugin not in installed_plugin_names():
            hint += f" and install it ({install_hint(plugin)})"
        return hint
    if unavailable:
        return "optional plugins that did not load: " + "; ".join(f"{p!r}: {why}" for p, why in unavailable.items())
    return f"a {role} from another plugin needs that plugin in [kestrel] plugins"


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
            raise KeyError(f"no {role} named {name!r} in the loaded plugins (available: {avail}){hint}")
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
                raise PluginError(failures[name], plugin=name)
        found = {ext.name for ext in manager}
        for name in wanted:
            if name not in found:
                message, hint = missing_plugin(name)
                raise PluginError(message, plugin=name, hint=hint)
        for name in maybe:
            if name not in found:
                if name in failures:
                    self.unavailable[name] = failures[name]
                    continue
                message, hint = missing_plugin(name)
                self.unavailable[name] = f"{message} ({hint})" if hint else message
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
