"""The built-in plugin ``core``: registered through the same hooks and the
same ``kestrel.plugins`` entry point as any third-party plugin."""

from __future__ import annotations

from ..hookspecs import hookimpl


@hookimpl
def kestrel_register_sources(register):
    from .jsonl import JsonlSource
    from .klog import KlogSource

    register(JsonlSource)
    register(KlogSource)


@hookimpl
def kestrel_register_normalizers(register):
    from ..normalize import EcsJsonNormalizer
    from .klog import KlogNormalizer

    register(EcsJsonNormalizer)
    register(KlogNormalizer)


@hookimpl
def kestrel_register_matchers(register):
    from ..eql.index import CategoryMatcher, LiteralIndexMatcher

    register(LiteralIndexMatcher)
    register(CategoryMatcher)


@hookimpl
def kestrel_register_runtimes(register):
    from ..eql.abi import ReferenceRuntime
    from ..eql.hostruntime import HostRuntime

    register(HostRuntime)
    register(ReferenceRuntime)


@hookimpl
def kestrel_register_sinks(register):
    from .console import ConsoleSink
    from .jsonl import JsonlAlertSink
    from .klog import KlogSink
    from .webhook import WebhookSink

    register(ConsoleSink)
    register(JsonlAlertSink)
    register(KlogSink)
    register(WebhookSink)
