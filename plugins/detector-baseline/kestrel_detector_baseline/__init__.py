"""Kestrel detector plugin: a learned per-host behaviour baseline (see README.md)."""

from .detector import BaselineDetector

__all__ = ["BaselineDetector"]
