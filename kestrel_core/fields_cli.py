"""``kestrel fields``: per installed source, the fields it emits, their types and the event kinds that carry them."""

from __future__ import annotations

import json
import sys
import textwrap

import click

from .cliutil import EXIT_USAGE
from .cliutil import table_width
from .fields import SourceFields, installed_sources


def _kinds_text(names: list[str], total: int) -> str:
    return f"all {total}" if len(names) == total and total > 1 else ", ".join(names)


@click.command("fields")
@click.option("--source", "-s", "only", multiple=True, metavar="NAME",
              help="Only this source (its profile type, e.g. ebpf); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per source instead of the tables.")
def fields_command(only: tuple[str, ...], as_json: bool) -> None:
    """Per installed source: the fields it emits, with their types and the event
    kinds that carry them.  A source whose input decides its fields (jsonl,
    klog) says "any"; one that declares nothing says so."""
    from .plugins import rules_schema

    sources = installed_sources()
    if only:
        unknown = sorted(set(only) - {s.source for s in sources})
        if unknown:
            have = ", ".join(sorted({s.source for s in sources if s.source != "?"}))
            click.echo(f"no installed source named {', '.join(map(repr, unknown))} (installed: {have})", err=True)
            sys.exit(EXIT_USAGE)
        sources = [s for s in sources if s.source in only]
    schema = rules_schema()

    def ftype(path: str) -> str:
        fdef = schema.get(path)
        return fdef.type.value if fdef is not None and fdef.declared else "any"

    if as_json:
        for s in sources:
            obj: dict = {"source": s.source, "plugin": s.plugin}
            if s.error:
                obj["error"] = s.error
            elif s.declared:
                obj["kinds"] = [{"name": k.name, "category": k.category, "action": k.action,
                                 "fields": sorted(k.fields)} for k in s.kinds]
                obj["fields"] = {p: {"type": ftype(p), "kinds": ks} for p, ks in s.fields().items()}
            else:
                obj["fields"] = s.kinds or "undeclared"
            click.echo(json.dumps(obj))
        return
    for s in sources:
        _print_source(s, ftype)


def _print_source(s: SourceFields, ftype) -> None:
    head = f"{click.style(s.source, bold=True)}  (plugin {s.plugin})"
    if s.error:
        click.echo(f"{head}: {click.style('broken', fg='red')}: {s.error}\n")
        return
    if not s.declared:
        what = "any: the fields its input holds" if s.kinds else "not declared (the source does not say what it emits)"
        click.echo(f"{head}: {what}\n")
        return
    fields = s.fields()
    kinds = [k.name for k in s.kinds]
    click.echo(f"{head}: {len(fields)} fields in {len(kinds)} event kinds")
    by_category: dict[str, list[str]] = {}
    for k in s.kinds:
        by_category.setdefault(k.category, []).append(k.name)
    text = "kinds: " + "; ".join(f"{cat}: {', '.join(names)}" for cat, names in by_category.items())
    for line in textwrap.wrap(text, table_width() - 2, subsequent_indent="       ", break_on_hyphens=False):
        click.echo(f"  {line}")
    width = max(len(p) for p in fields)
    twidth = max(len(ftype(p)) for p in fields)
    click.echo(f"  {'field':<{width}}  {'type':<{twidth}}  event kinds")
    for path, names in fields.items():
        click.echo(f"  {path:<{width}}  {ftype(path):<{twidth}}  {_kinds_text(names, len(kinds))}")
    click.echo("")
