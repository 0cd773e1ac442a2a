"""Finding matchers by name for the commands that build an engine without a
profile (``kestrel eval``, ``replay``, ``rules test|explain|cost``).

A matcher ``NAME`` is looked up among the core's (``literal-index``,
``category``), then in the plugin conventionally called ``matcher-NAME`` (one
import), then in every installed plugin.  One that is not installed or whose
probe fails is a usage error with the reason (:class:`MatcherUnavailable`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import attrs

from .interfaces import Matcher
from .plugins import PluginHost

DEFAULT = "literal-index"


class MatcherUnavailable(ValueError):
    """The named matcher is not installed or cannot run here (message says why)."""


@functools.lru_cache(maxsize=None)  # installed classes do not change within a process
def _installed_matcher(name: str) -> type | None:
    from importlib.metadata import entry_points

    from .plugins import ENTRY_POINT_GROUP

    for optional in ([], [f"matcher-{name}"], sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))):
        host = PluginHost()
        host.load([], optional=optional)
        comp = host.registry.by_role["matcher"].get(name)
        if comp is not None:
            return comp.cls
    return None


def find_matcher(name: str, host: PluginHost | None = None) -> type:
    """The matcher class called ``name``; with ``host`` (a run) only among its loaded plugins.

    :raise MatcherUnavailable: not installed (or not loaded), or its probe failed.
    """
    if host is not None:
        comp = host.registry.by_role["matcher"].get(name)
        if comp is None:
            raise MatcherUnavailable(f"matcher {name!r} is not available: no loaded plugin provides it "
                                     f"(add 'matcher-{name}' to [kestrel] plugins)")
        cls = comp.cls
    else:
        cls = _installed_matcher(name)
        if cls is None:
            from importlib.metadata import entry_points

            from .plugins import ENTRY_POINT_GROUP

            plugins = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            raise MatcherUnavailable(f"matcher {name!r} is not available: no installed plugin provides it "
                                     f"(installed plugins: {', '.join(plugins)})")
    try:
        probe = cls.probe()
    except Exception as exc:  # a probe must not take the command down
        raise MatcherUnavailable(f"matcher {name!r} is not available: its probe raised "
                                 f"{type(exc).__name__}: {exc}") from None
    if not probe.available:
        raise MatcherUnavailable(f"matcher {name!r} is not available: {probe.reason or 'its probe failed'}")
    return cls


def make_matcher(name: str | None, settings: Any = None, *, context: Any = None,
                 host: PluginHost | None = None) -> Matcher:
    """An instance of matcher ``name`` (default: ``literal-index``).  ``settings``:
    its Settings object, or a mapping of its keys (unknown keys are an error)."""
    cls = find_matcher(name or DEFAULT, host)
    if settings is None:
        settings = cls.Settings()
    elif isinstance(settings, Mapping):
        names = {f.name for f in attrs.fields(cls.Settings)} if attrs.has(cls.Settings) else set()
        unknown = sorted(set(settings) - names)
        if unknown:
            raise MatcherUnavailable(f"matcher {name!r} has no setting {', '.join(map(repr, unknown))}"
                                     f" (it takes: {', '.join(sorted(names)) or 'none'})")
        settings = cls.Settings(**settings)
    return cls(settings, context)


def matcher_option(help_text: str = "Candidate pre-selection (literal-index, category, acdfa, ...; "
                                    "default: literal-index), as [engine] matcher.") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--matcher NAME`` (the profile's ``[engine] matcher``)."""
    import click

    return click.option("--matcher", "matcher", default=None, metavar="NAME", help=help_text)
