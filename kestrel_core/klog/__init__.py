"""The binary event log (``.klog``): format (:mod:`.format`), recording and
export (:mod:`.record`).  Specified in docs/klog.md."""

from .format import (FORMAT_VERSION, KlogError, KlogReader, KlogWriter, LogWarning, document, export_lines,
                     source_extra)

__all__ = ["FORMAT_VERSION", "KlogError", "KlogReader", "KlogWriter", "LogWarning", "document", "export_lines",
           "source_extra"]
