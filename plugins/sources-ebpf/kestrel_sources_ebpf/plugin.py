"""Entry point of the ``sources-ebpf`` plugin (group ``kestrel.plugins``).

Importing this module needs no bcc: ``EbpfSource.probe()`` reports what the
host lacks, so ``kestrel plugins list`` can explain it.
"""

from kestrel_core import hookimpl

from .normalizer import EbpfNormalizer, declare_fields
from .source import EbpfSource


@hookimpl
def kestrel_declare_fields(schema):
    declare_fields(schema)


@hookimpl
def kestrel_register_sources(register):
    register(EbpfSource)


@hookimpl
def kestrel_register_normalizers(register):
    register(EbpfNormalizer)
