"""Kestrel matcher plugin ``matcher-acdfa``: an Aho-Corasick literal prefilter
(pyahocorasick) with a lazily compiled precise check (see matcher.py)."""

__version__ = "0.1.0"

from .matcher import AcdfaMatcher, AcdfaSettings  # noqa: E402

__all__ = ["AcdfaMatcher", "AcdfaSettings", "__version__"]
