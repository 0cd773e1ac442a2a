"""TOML profiles: which plugins and components a run uses, and their settings.

Validation happens before anything starts: TOML syntax, unknown keys, wrong
types, bad values, unknown or uninstalled plugins and unknown component types
are all :class:`ProfileError` with ``file:line:column`` and, where one exists,
a hint.  tomllib keeps no positions, so :class:`KeyLocator` finds them by
scanning the text.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import attrs

from .incidents import IncidentsSettings
from .plugins import ComponentRegistry, component_hint
from .suppression import check_profile_default
from .validators import fraction, non_negative, one_of, ordered_steps, positive

MODES = ("detect", "enforce", "replay")
ROLE_TABLES = {"sources": "source", "sinks": "sink", "actions": "action", "detectors": "detector"}


class ProfileError(Exception):
    def __init__(self, file: str, line: int, column: int, message: str, hint: str = "") -> None:
        self.file, self.line, self.column, self.message, self.hint = file, line, column, message, hint
        text = f"{file}:{line}:{column}: error: {message}"
        if hint:
            text += f"\n  hint: {hint}"
        super().__init__(text)


# --------------------------------------------------------------------------- sections


@attrs.define(kw_only=True)
class KestrelSection:
    mode: str = attrs.field(default="detect", validator=one_of(*MODES))
    """detect: alert only; enforce: actions may block; replay: actions are simulated."""
    plugins: list[str] = attrs.Factory(list)
    """Plugins to load besides the built-in ``core`` (entry-point names)."""
    optional_plugins: list[str] = attrs.Factory(list)
    """Plugins loaded when installed and working; if one is not, its components are
    unavailable and a source with a ``fallback`` uses that instead (logged)."""
    log_level: str = attrs.field(default="info", validator=one_of("debug", "info", "warning", "error"))


@attrs.define(kw_only=True)
class RulesSection:
    paths: list[str] = attrs.Factory(list)
    """Rule pack files or directories, relative to the profile file."""
    strictness: str = attrs.field(default="warn", validator=one_of("error", "warn", "off"))
    """Semantic checks against the schema: error rejects the rule, warn logs."""
    on_error: str = attrs.field(default="refuse", validator=one_of("refuse", "skip"))
    """A rule that does not load (``kestrel profile check`` fails): ``refuse``
    stops ``kestrel run`` before it starts; ``skip`` runs the other rules and
    reports the rejected ones at start and in the stop summary."""
    watch: bool = False
    """Hot reload: watch the rule paths during ``kestrel run`` and swap in a changed
    pack set between two batches; a set with any error is rejected whole."""
    compile_cache: str = ""
    """Directory of the persistent compile cache (relative to the profile file;
    empty: none, unless ``KESTREL_COMPILE_CACHE`` names one)."""
    suppress: dict = attrs.field(factory=dict, validator=check_profile_default)
    """Suppression of rules that set none: ``{ by = [fields], window = "5m" }``
    (empty: none); see docs/rule-packs.md."""


@attrs.define(kw_only=True)
class EngineSection:
    runtime: str = "host"
    """Default predicate runtime for rules that do not name one."""
    matcher: str = "literal-index"
    """Candidate pre-selection: ``literal-index`` (category + literal prefilter) or ``category``."""
    runtime_fallback: str = attrs.field(default="none", validator=one_of("none", "host"))
    """A rule naming a runtime that is unavailable here: ``none`` rejects the rule
    (logged), ``host`` runs it on the host runtime with a logged reason."""
    runtime_settings: dict = attrs.Factory(dict)
    """``[engine.runtime_settings.NAME]``: settings of runtime NAME (its plugin's keys)."""
    cost_profile: bool = False
    """Time every rule's predicates and publish the cost profile as metrics
    (``kestrel_rule_eval_seconds_total``, ``kestrel_rule_evaluations_total``,
    ``kestrel_rule_candidate_hits_total``, ``kestrel_matcher_operations_total``)."""
    matcher_settings: dict = attrs.Factory(dict)
    """``[engine.matcher_settings]``: settings of the selected matcher (its plugin's keys,
    e.g. acdfa's ``lru_capacity``)."""
    lazy_dfa: bool = True
    """Run hot sequences that the lazy DFA can express on it (alerts are the same)."""
    dfa_hot_hits: int = attrs.field(default=1024, validator=non_negative)
    """Step hits a sequence rule's NFA handles before its DFA is compiled."""
    dfa_max_states: int = attrs.field(default=64, validator=positive)
    """States one DFA may reach; past it the rule stays on the NFA."""
    dfa_max_transitions: int = attrs.field(default=4096, validator=positive)
    """Transition-table entries one DFA may hold; past it the rule stays on the NFA."""
    dfa_cache: int = attrs.field(default=256, validator=non_negative)
    """Compiled DFAs kept at once (least recently used dropped; 0: none)."""


@attrs.define(kw_only=True)
class BusSection:
    capacity: int = attrs.field(default=65536, validator=positive)
    """Events the queue holds between sources and the engine."""
    batch_size: int = attrs.field(default=1024, validator=positive)
    """Events a source hands over at once (and the engine evaluates per call)."""
    flush_interval_ms: int = attrs.field(default=50, validator=positive)
    """A partial batch is handed over after this long, so quiet sources are not delayed."""
    backpressure: str = attrs.field(default="block", validator=one_of("block", "drop"))
    """block: sources wait when the queue is full; drop: the batch is dropped and counted."""


@attrs.define(kw_only=True)
class BudgetsSection:
    max_partials_per_rule: int = attrs.field(default=200_000, validator=positive)
    max_partials_per_entity: int = attrs.field(default=64, validator=positive)
    state_ttl_s: float = attrs.field(default=3600.0, validator=positive)
    rule_batch_ms: float = attrs.field(default=1000.0, validator=positive)
    """Watchdog: a rule whose predicate takes longer than this over one batch is
    disabled (logged, ``kestrel_rule_disabled_total{reason="budget_time"}``)."""
    rule_share: float = attrs.field(default=0.0, validator=fraction)
    """A rule taking more than this share of the engine's time (while the engine
    is busy) is degraded one step per window (0: no per-rule budget)."""
    engine_cpu: float = attrs.field(default=0.0, validator=non_negative)
    """Fraction of one CPU the engine thread may use; past it, its costliest rule
    is degraded one step per window (0: no global budget)."""
    busy_floor: float = attrs.field(default=0.05, validator=fraction)
    """Engine busy fraction of a CPU under which ``rule_share`` is not judged."""
    window_s: float = attrs.field(default=2.0, validator=positive)
    """Length of the window budgets are judged over."""
    degrade_order: list[str] = attrs.field(factory=lambda: ["prefilter", "sample", "offline"],
                                           validator=ordered_steps("prefilter", "sample", "offline"))
    """Steps a rule over budget goes down, one per window (docs/budgets.md)."""
    sample_every: int = attrs.field(default=8, validator=positive)
    """A rule at the ``sample`` step runs on one batch in this many."""
    recover_windows: int = attrs.field(default=3, validator=positive)
    """Windows in a row without pressure before a degraded rule goes one step back up."""
    recover_ratio: float = attrs.field(default=0.5, validator=fraction)
    """No pressure: the rule's estimated full cost under this fraction of the budgets."""


@attrs.define(kw_only=True)
class WatchdogSection:
    """Memory and CPU limits of the whole agent, enforced by shedding load (docs/deployment.md)."""

    memory_mb: float = attrs.field(default=0.0, validator=non_negative)
    """RSS limit in MB (0: no memory watchdog); the shedding steps start below it."""
    shed_levels: list[float] = attrs.field(factory=lambda: [0.7, 0.85, 0.95])
    """Fraction of ``memory_mb`` at which each step of ``shed_order`` is taken."""
    cpu_percent: float = attrs.field(default=0.0, validator=non_negative)
    """CPU limit of the process in percent of one CPU over ``cpu_windows`` (0: none);
    past it the steps of ``shed_order`` but ``stop`` are taken, one per window, and
    given back in reverse once under half the limit."""
    cpu_windows: int = attrs.field(default=3, validator=positive)
    shed_order: list[str] = attrs.field(factory=lambda: ["low_priority_packs", "sample", "stop"],
                                        validator=ordered_steps("low_priority_packs", "sample", "stop"))
    """Load shedding, in order: rules of low-priority packs stop (their sequence
    state is dropped), events are sampled, then a graceful stop (sinks flushed)."""
    low_priority_below: int = 0
    """Packs whose ``priority`` is below this are the low-priority ones."""
    sample_every: int = attrs.field(default=4, validator=positive)
    """``sample``: one batch in this many is evaluated; the others are counted as dropped."""
    interval_s: float = attrs.field(default=0.5, validator=positive)
    """How often the watchdog reads the process's RSS and CPU time."""

    def __attrs_post_init__(self) -> None:
        levels = self.shed_levels
        if len(levels) != len(self.shed_order) or any(not 0 < x <= 1 for x in levels) or levels != sorted(levels):
            raise ValueError(f"shed_levels must give one rising fraction of memory_mb (0 < x <= 1) per step of "
                             f"shed_order ({len(self.shed_order)}), not {levels!r}")


@attrs.define(kw_only=True)
class StatusSection:
    path: str = ""
    """Status JSON a running agent rewrites atomically for ``kestrel top``
    (relative to the profile file; empty: ``$STATE_DIRECTORY/status.json``
    under systemd, else none)."""
    interval_s: float = attrs.field(default=1.0, validator=positive)


@attrs.define(kw_only=True)
class ComponentSpec:
    role: str
    type: str
    plugin: str
    settings: Any
    line: int
    column: int
    normalizer_settings: Any = None
    """Sources only: settings of the source's normalizer (``normalizer = {...}``)."""
    fallback: "ComponentSpec | None" = None
    """Sources only: what to run when this source is unavailable (``fallback = ...``)."""
    delivery: Any = None
    """Sinks only: queue, retry and bypass settings (``delivery = {...}``, kestrel_core.delivery.Delivery)."""
    unavailable: str = ""
    """Why this component cannot run (its optional plugin is missing); set only when a fallback exists."""

    def chain(self) -> list["ComponentSpec"]:
        """This spec, then its fallbacks in order."""
        out, spec = [], self
        while spec is not None:
            out.append(spec)
            spec = spec.fallback
        return out


@attrs.define(kw_only=True)
class Profile:
    path: str
    kestrel: KestrelSection
    rules: RulesSection
    engine: EngineSection
    bus: BusSection
    budgets: BudgetsSection
    sources: list[ComponentSpec]
    sinks: list[ComponentSpec]
    actions: list[ComponentSpec]
    detectors: list[ComponentSpec] = attrs.Factory(list)
    watchdog: WatchdogSection = attrs.Factory(WatchdogSection)
    status: StatusSection = attrs.Factory(StatusSection)
    incidents: IncidentsSettings = attrs.Factory(IncidentsSettings)
    """``[incidents]``: alert correlation (kestrel_core/incidents.py, docs/incidents.md)."""

    def resolve_path(self, p: str) -> Path:
        """Paths in a profile are relative to the profile file."""
        path = Path(p).expanduser()
        return path if path.is_absolute() else (Path(self.path).resolve().parent / path)


SECTIONS = {
    "kestrel": KestrelSection,
    "rules": RulesSection,
    "engine": EngineSection,
    "bus": BusSection,
    "budgets": BudgetsSection,
    "watchdog": WatchdogSection,
    "status": StatusSection,
    "incidents": IncidentsSettings,
}


# --------------------------------------------------------------------------- positions


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", text)
    return tuple(next(p for p in part if p != "") if any(part) else "" for part in parts)


class KeyLocator:
    """Maps key paths (``("sinks", 1, "address")``) to (line, column)."""

    def __init__(self, text: str) -> None:
        self.positions: dict[tuple, tuple[int, int]] = {}
        counters: dict[tuple, int] = {}
        table: tuple = ()
        in_multiline: str | None = None
        depth = 0  # open brackets of a multi-line array or inline table
        for lineno, line in enumerate(text.splitlines(), start=1):
            if in_multiline:
                if in_multiline in line:
                    in_multiline = None
                continue
            if depth > 0:
                depth += _bracket_delta(line)
                continue
            m = _HEADER.match(line)
            if m and not _KEY.match(line):
                key = _split_key(m.group(2))
                if m.group(1) == "[[":
                    idx = counters.get(key, -1) + 1
                    counters[key] = idx
                    table = key + (idx,)
                else:
                    table = key
                self.positions.setdefault(table, (lineno, line.index("[") + 1))
                continue
            m = _KEY.match(line)
            if m:
                key = table + _split_key(m.group(1))
                col = len(line) - len(line.lstrip()) + 1
                self.positions.setdefault(key, (lineno, col))
                value_col = m.end() + (len(line[m.end():]) - len(line[m.end():].lstrip())) + 1
                self.positions.setdefault(key + ("=",), (lineno, value_col))
                rest = line[m.end():]
                for quote in ('"""', "'''"):
                    if rest.count(quote) == 1:
                        in_multiline = quote
                depth = max(0, _bracket_delta(rest))

    def key(self, path: tuple) -> tuple[int, int]:
        """Position of the key itself, or of the closest enclosing table."""
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return (1, 1)

    def value(self, path: tuple) -> tuple[int, int]:
        return self.positions.get(path + ("=",)) or self.key(path)


def _bracket_delta(text: str) -> int:
    text = re.sub(r"\"(?:\\.|[^\"\\])*\"|'[^']*'|#.*$", "", text)
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")


# --------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return "a list of " + {str: "strings", int: "integers", float: "numbers", bool: "booleans"}.get(arg, "values")
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean (true/false)", dict: "a table"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_matches(v, arg) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if origin is typing.Union or str(origin) == "types.UnionType":
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


class Validator:
    def __init__(self, file: str, locator: KeyLocator) -> None:
        self.file = file
        self.loc = locator

    def error(self, path: tuple, message: str, hint: str = "", *, at_value: bool = False) -> ProfileError:
        line, col = self.loc.value(path) if at_value else self.loc.key(path)
        return ProfileError(self.file, line, col, message, hint)

    def build(self, cls: type, table: Any, path: tuple, where: str, skip: tuple[str, ...] = ()) -> Any:
        """Instantiate attrs class ``cls`` from a TOML table, checking keys and types."""
        if not isinstance(table, dict):
            raise self.error(path, f"{where} must be a table")
        fields = {f.name: f for f in attrs.fields(attrs.resolve_types(cls))}
        kwargs = {}
        for key, value in table.items():
            if key in skip:
                continue
            fdef = fields.get(key)
            if fdef is None:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f"did you mean {close[0]!r}?" if close else (
                    f"valid keys: {', '.join(fields)}" if fields else f"{where} takes no settings")
                raise self.error(path + (key,), f"unknown key {key!r} in {where}", hint)
            if attrs.has(fdef.type) and isinstance(value, dict):
                value = self.build(fdef.type, value, path + (key,), f"{where}.{key}")
            elif not _matches(value, fdef.type):
                raise self.error(
                    path + (key,),
                    f"{where}: {key!r} must be {_type_name(fdef.type)}, not {type(value).__name__} {value!r}",
                    at_value=True,
                )
            kwargs[key] = value
        missing = [f.name for f in fields.values() if f.default is attrs.NOTHING and f.name not in kwargs]
        if missing:
            raise self.error(path, f"{where}: missing required key {missing[0]!r}")
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            bad = max((k for k in kwargs if k in str(exc)), key=len, default=None)  # runtime_fallback, not runtime
            raise self.error(path + ((bad,) if bad else ()), f"{where}: {exc}", at_value=bad is not None) from None


def _table_header(key: str) -> str:
    """How a top-level table is written: ``[[sinks]]`` for arrays of tables, ``[bus]`` otherwise."""
    return f"[[{key}]]" if key in ROLE_TABLES else f"[{key}]"


def _component_hint(message: str, role: str, name: str, registry: ComponentRegistry,
                    unavailable: dict[str, str]) -> str:
    """The hint for a component no loaded plugin offers (none when the
    registry already suggested a near loaded name)."""
    if "did you mean" in message:
        return ""
    loaded = {comp.plugin for _, comp in registry.components()}
    return component_hint(role, name, loaded, unavailable)


def read_profile(path: str | Path, text: str | None = None) -> tuple[dict[str, Any], Validator]:
    """Parse TOML; syntax errors become located ProfileErrors."""
    name = str(path)
    if text is None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ProfileError(name, 0, 0, f"cannot read profile: {exc.strerror or exc}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            from .rules import utf8_position

            line, col, msg = utf8_position(data, exc)
            raise ProfileError(name, line, col, f"invalid TOML: {msg}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        from .rules import toml_position

        line, col, msg = toml_position(text.split("\n"), exc)
        raise ProfileError(name, line, col, f"invalid TOML: {msg}") from None
    return data, Validator(name, KeyLocator(text))


def plugin_names(data: dict[str, Any], validator: Validator) -> tuple[list[str], list[str]]:
    """The ``[kestrel] plugins`` and ``optional_plugins`` lists, validated before any plugin is imported."""
    section = data.get("kestrel", {})
    if not isinstance(section, dict):
        raise validator.error(("kestrel",), "[kestrel] must be a table")
    kestrel = validator.build(KestrelSection, section, ("kestrel",), "[kestrel]")
    return kestrel.plugins, kestrel.optional_plugins


def build_profile(data: dict[str, Any], validator: Validator, registry: ComponentRegistry,
                  unavailable: dict[str, str] | None = None) -> Profile:
    """Validate everything against the components the loaded plugins offer.
    ``unavailable``: optional plugins that could not be loaded, and why."""
    unavailable = unavailable or {}
    known = set(SECTIONS) | set(ROLE_TABLES)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {_table_header(close[0])}?" if close else \
                f"valid tables: {', '.join(_table_header(k) for k in sorted(known))}"
            raise validator.error((key,), f"unknown table or key {key!r}", hint)
    sections = {name: validator.build(cls, data.get(name, {}), (name,), f"[{name}]") for name, cls in SECTIONS.items()}
    _runtime_settings(sections["engine"], validator, registry)
    for role in ("runtime", "matcher"):
        try:
            registry.get(role, getattr(sections["engine"], role))
        except KeyError as exc:
            raise validator.error(("engine", role), str(exc.args[0]),
                                  _component_hint(str(exc.args[0]), role, getattr(sections["engine"], role),
                                                  registry, unavailable), at_value=True) from None
    engine = sections["engine"]
    engine.matcher_settings = validator.build(registry.get("matcher", engine.matcher).cls.Settings,
                                              engine.matcher_settings, ("engine", "matcher_settings"),
                                              "[engine.matcher_settings]")
    lists: dict[str, list[ComponentSpec]] = {}
    for table, role in ROLE_TABLES.items():
        entries = data.get(table, [])
        if not isinstance(entries, list):
            raise validator.error((table,), f"{table} must be an array of tables: write [[{table}]]")
        specs = []
        for i, entry in enumerate(entries):
            path = (table, i)
            where = f"[[{table}]] #{i + 1}"
            if not isinstance(entry, dict):
                raise validator.error(path, f"{where} must be a table")
            specs.append(_component_spec(entry, path, where, role, validator, registry, unavailable))
        lists[table] = specs
    return Profile(path=validator.file, **sections, **lists)


def _runtime_settings(engine: EngineSection, validator: Validator, registry: ComponentRegistry) -> None:
    """Check ``[engine.runtime_settings.NAME]`` against runtime NAME's Settings
    (when its plugin is loaded) and replace each table by its Settings object."""
    for name, table in list(engine.runtime_settings.items()):
        path = ("engine", "runtime_settings", name)
        comp = registry.by_role["runtime"].get(name)
        if comp is None:
            continue  # an unloaded runtime: its rules are rejected or fall back, with the reason, at start
        engine.runtime_settings[name] = validator.build(comp.cls.Settings, table, path,
                                                        f"[engine.runtime_settings.{name}]")


def _component_spec(entry: dict[str, Any], path: tuple, where: str, role: str, validator: Validator,
                    registry: ComponentRegistry, unavailable: dict[str, str]) -> ComponentSpec:
    ctype = entry.get("type")
    if not isinstance(ctype, str):
        raise validator.error(path, f"{where}: missing required key 'type' (the {role} to use)",
                              f"installed {role}s in loaded plugins: {', '.join(sorted(registry.by_role[role])) or 'none'}")
    fallback = None
    skip: tuple[str, ...] = ("type",)
    if role == "source" and "fallback" in entry:
        skip += ("fallback",)
        raw = entry["fallback"]
        if isinstance(raw, str):
            raw = {"type": raw}
        if not isinstance(raw, dict):
            raise validator.error(path + ("fallback",), f"{where}: 'fallback' must be a source type or a table "
                                  f"{{type = ..., <settings>}}, not {type(raw).__name__}", at_value=True)
        fallback = _component_spec(raw, path + ("fallback",), f"{where} fallback", role, validator, registry,
                                   unavailable)
    line, col = validator.loc.key(path)
    try:
        comp = registry.get(role, ctype)
    except KeyError as exc:
        if fallback is not None and unavailable:
            # An optional plugin is missing: its component cannot be checked, the fallback is used.
            why = "; ".join(unavailable.values())
            return ComponentSpec(role=role, type=ctype, plugin="", settings=None, line=line, column=col,
                                 fallback=fallback, unavailable=f"no {role} {ctype!r} loaded ({why})")
        message = str(exc.args[0])
        raise validator.error(path + ("type",), message,
                              _component_hint(message, role, ctype, registry, unavailable), at_value=True) from None
    norm_settings = None
    if role == "source":
        skip += ("normalizer",)
        norm = registry.get("normalizer", comp.cls.NORMALIZER)
        norm_settings = validator.build(norm.cls.Settings, entry.get("normalizer", {}), path + ("normalizer",),
                                        f"{where} normalizer ({norm.name!r})")
    delivery = None
    if role == "sink":
        from .delivery import Delivery

        skip += ("delivery",)
        table = entry.get("delivery", {})
        if isinstance(table, dict):  # the sink class's defaults (webhook: retries), then the profile's keys
            table = {**getattr(comp.cls, "DELIVERY_DEFAULTS", {}), **table}
        delivery = validator.build(Delivery, table, path + ("delivery",), f"{where} delivery")
    settings = validator.build(comp.cls.Settings, entry, path, f"{where} ({role} {ctype!r})", skip=skip)
    return ComponentSpec(role=role, type=ctype, plugin=comp.plugin, settings=settings, line=line, column=col,
                         normalizer_settings=norm_settings, fallback=fallback, delivery=delivery)
