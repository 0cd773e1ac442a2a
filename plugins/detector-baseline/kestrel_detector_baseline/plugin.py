"""Entry point ``detector-baseline``: registers the ``baseline`` detector."""

from __future__ import annotations

from kestrel_core.hookspecs import hookimpl

from .detector import BaselineDetector


@hookimpl
def kestrel_register_detectors(register):
    register(BaselineDetector)
