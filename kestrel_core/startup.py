"""From a profile path to a validated profile with its plugins loaded: what
``kestrel run``, ``replay --profile``, ``rules check --profile`` and
``profile check`` all do first (and tests and plugins that start a run)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from .plugins import PluginError, PluginHost
from .profile import Profile, ProfileError, build_profile, plugin_names, read_profile


def default_profile_path() -> Path:
    return Path(str(resources.files("kestrel_core") / "data" / "default.toml"))


def load_profile(path: str | Path) -> tuple[Profile, PluginHost]:
    """Read, load the named plugins, validate.  Raises ProfileError (located)."""
    data, validator = read_profile(path)
    names, optional = plugin_names(data, validator)
    host = PluginHost()
    try:
        host.load(names, optional)
    except PluginError as exc:
        bad = exc.plugin or next((n for n in names if f"'{n}'" in str(exc)), None)
        line, col = _find_string(Path(path).read_text(encoding="utf-8"), bad) if bad else (0, 0)
        if not line:
            line, col = validator.loc.value(("kestrel", "plugins"))
        raise ProfileError(str(path), line, col, exc.message, exc.hint) from None
    return build_profile(data, validator, host.registry, host.unavailable), host


def _find_string(text: str, value: str) -> tuple[int, int]:
    m = re.search(r"[\"']" + re.escape(value) + r"[\"']", text)
    if not m:
        return (0, 0)
    line = text.count("\n", 0, m.start()) + 1
    return line, m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
