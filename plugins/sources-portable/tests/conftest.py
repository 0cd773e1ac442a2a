"""Fixtures for the portable source tests (helpers: kestrel_sources_portable.testing)."""

from kestrel_sources_portable.testing import live  # noqa: F401  (a fixture)
