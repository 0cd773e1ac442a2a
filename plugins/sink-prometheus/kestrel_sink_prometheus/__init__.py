"""Kestrel sink plugin exporting a run's counters as Prometheus metrics.

Selected in a profile with ``plugins = ["sink-prometheus"]`` and a
``[[sinks]] type = "prometheus"`` table; see README.md.
"""

from .address import parse_address
from .sink import MetricsBindError, PrometheusSink

__all__ = ["MetricsBindError", "PrometheusSink", "parse_address"]
