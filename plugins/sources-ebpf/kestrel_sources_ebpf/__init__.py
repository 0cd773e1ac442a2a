"""Kestrel source plugin: live kernel events from eBPF tracepoints (bcc).

Selected in a profile with ``plugins = ["sources-ebpf"]`` and a
``[[sources]] type = "ebpf"`` table; see README.md.
"""

from .normalizer import EbpfNormalizer
from .source import EbpfSource, probe_host

__all__ = ["EbpfNormalizer", "EbpfSource", "probe_host"]
