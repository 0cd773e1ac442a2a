"""Kestrel core: hook specs, event model, profiles, bus, EQL engine and CLI.

Plugin authors need ``hookimpl`` (to mark hook implementations) and the
interfaces in :mod:`kestrel_core.interfaces`.
"""

from .hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "__version__"]
