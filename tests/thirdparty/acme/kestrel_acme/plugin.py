"""Entry point ``acme``: registers the components and observes the run."""

from __future__ import annotations

from kestrel_core import hookimpl


@hookimpl
def kestrel_register_sources(register):
    from .falco import FalcoJsonSource
    from .kernel import AcmeKernelSource

    register(FalcoJsonSource)
    register(AcmeKernelSource)


@hookimpl
def kestrel_register_sinks(register):
    from .textlog import TextLogSink

    register(TextLogSink)


@hookimpl
def kestrel_run_start(context):
    for sink in context.components.get("sink", []):
        if getattr(sink, "PLUGIN_NAME", "") == "acme-textlog":
            sink.note(f"start mode={context.mode}")


@hookimpl
def kestrel_run_stop(context, reason):
    # Called after the sinks are closed: append to the file the sink wrote.
    b = context.stats.balance()
    for sink in context.components.get("sink", []):
        if getattr(sink, "PLUGIN_NAME", "") == "acme-textlog":
            with open(sink.path, "a", encoding="utf-8") as fh:
                fh.write(f"# stop reason={reason} read={b['read']} processed={b['processed']} dropped={b['dropped']}\n")
