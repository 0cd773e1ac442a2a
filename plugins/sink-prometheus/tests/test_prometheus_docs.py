"""The metric tables of README.md (this plugin's and the project's) against
real scrapes over HTTP: every documented metric is exported with the
documented type and labels, and every exported or published ``kestrel_*``
metric is documented."""

from __future__ import annotations

import ast
import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kestrel_core.reload import RuleReloader, publish_packs
from kestrel_core.packs import load_packs
from kestrel_core.testing import wait_for
from kestrel_sink_prometheus.collector import naming_problem

PLUGIN = Path(__file__).resolve().parents[1]
REPO = PLUGIN.parents[1]
in_repo = pytest.mark.skipif(not (REPO / "kestrel_core").is_dir(), reason="needs the project's source tree")

Doc = dict[str, tuple[str, frozenset[str]]]  # metric -> (type, label names)


# ------------------------------------------------------------------ reading the docs and the scrapes


def metrics_tables(readme: Path) -> list[Doc]:
    """The tables of the '## Metrics' section, in order: rows whose first cell is a `kestrel_*` name."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    tables: list[Doc] = []
    previous_was_row = False
    for line in section.splitlines():
        m = re.match(r"^\|\s*`(kestrel_\w+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", line)
        if m and not previous_was_row:
            tables.append({})
        if m:
            name, kind, labels = m.groups()
            assert name not in tables[-1], f"{readme}: {name} listed twice"
            tables[-1][name] = (kind, frozenset(re.findall(r"`(\w+)`", labels)))
        previous_was_row = bool(m) or (previous_was_row and line.startswith("|"))
    return tables


def example_scrape(readme: Path) -> str:
    section = readme.read_text(encoding="utf-8").split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return section.split("Example scrape", 1)[1].split("```\n", 2)[1]


def exported(body: str) -> tuple[Doc, dict[str, str]]:
    """A scrape's kestrel_* metrics as documented names (counters with _total) -> (type, label names); and help texts."""
    doc, helps = {}, {}
    for family in text_string_to_metric_families(body):
        if not family.name.startswith("kestrel_"):
            continue
        name = family.name + "_total" if family.type == "counter" else family.name
        doc[name] = (family.type, frozenset(k for s in family.samples for k in s.labels))
        helps[name] = family.documentation
    return doc, helps


def published_in_code() -> Doc:
    """Every ``stats.extra["metrics"]["kestrel_..."] = {...}`` the project's code writes, as exposed."""
    files = list((REPO / "kestrel_core").rglob("*.py"))
    for plugin in (REPO / "plugins").iterdir():
        files += [f for pkg in plugin.glob("kestrel_*") if pkg.is_dir() for f in pkg.rglob("*.py")]
    found: Doc = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript)):
                continue
            key = node.targets[0].slice
            if not (isinstance(key, ast.Constant) and str(key.value).startswith("kestrel_")):
                continue
            spec = node.value
            if isinstance(spec, ast.Dict):
                fields = {k.value: v for k, v in zip(spec.keys, spec.values) if isinstance(k, ast.Constant)}
                if "values" not in fields:
                    continue  # not a metric spec
                kind = ast.literal_eval(fields["type"]) if "type" in fields else "gauge"
                labels = ast.literal_eval(fields["labels"]) if "labels" in fields else ()
            elif isinstance(spec, ast.Constant) and isinstance(spec.value, (int, float)):
                kind, labels = "gauge", ()
            else:
                continue
            labels = (labels,) if isinstance(labels, str) else labels
            name = key.value.removesuffix("_total") + "_total" if kind == "counter" else key.value
            assert name not in found or found[name] == (kind, frozenset(labels)), f"{name} published twice, differently"
            found[name] = (kind, frozenset(labels))
    return found


def fill(stats) -> None:
    """A sample in every labelled counter, so the scrape shows each one's labels."""
    stats.events_read.update({"jsonl": 7})
    stats.events_processed.update({("jsonl", "process"): 6})
    stats.events_dropped.update({("jsonl", "malformed"): 1})
    stats.alerts.update({("r1", "low"): 2})
    stats.evictions.update({("r-seq", "maxspan"): 4})
    stats.events_lost.update({("ebpf", "overflow"): 40})
    stats.alerts_incomplete.update({"r-seq": 2})
    stats.sink_errors.update({"webhook": 3})
    stats.sink_dropped.update({("webhook", "alert", "failed"): 1})
    stats.last_event_ts_ns = 1_700_000_000_000_000_000
    stats.queue_depth = 3


PACK = '[pack]\nname = "docs"\nversion = "2"\npriority = 1\n'
RULE = '''\
id = "docs.nc"
name = "netcat"
description = "netcat started"
severity = "high"
query = 'process where process.name == "nc"'
'''


@pytest.fixture
def published(tmp_path, context):
    """The run's publishers (rule packs and hot reload), writing into ``context.stats`` as in a run."""
    (tmp_path / "pack").mkdir()
    (tmp_path / "pack" / "pack.toml").write_text(PACK)
    (tmp_path / "pack" / "nc.toml").write_text(RULE)
    packset = load_packs([tmp_path / "pack"])
    assert packset.ok, packset.errors
    publish_packs(context.stats, packset, 1)
    RuleReloader([tmp_path / "pack"], lambda ps, engine: (None, {}), packset, context.stats)  # publishes its counter
    return context


@pytest.fixture
def docs() -> tuple[Doc, Doc, Doc]:
    own, others = metrics_tables(PLUGIN / "README.md")
    (top,) = metrics_tables(REPO / "README.md") if (REPO / "README.md").is_file() else ({},)
    return own, others, top


# ------------------------------------------------------------------ the checks


def test_sink_table_is_what_the_sink_exports(context, open_sink, http_get, docs):
    own, _, _ = docs
    fill(context.stats)
    status, _, body = http_get(open_sink().url)
    assert status == 200
    got, _ = exported(body)
    assert got == own, {"undocumented": {k: v for k, v in got.items() if own.get(k) != v},
                        "documented": {k: v for k, v in own.items() if got.get(k) != v}}


@in_repo
def test_project_readme_table_is_what_the_sink_exports(context, open_sink, http_get, docs):
    _, _, top = docs
    fill(context.stats)
    got, _ = exported(http_get(open_sink().url)[2])
    assert top == got


def test_published_metrics_table_matches_a_scrape(published, open_sink, http_get, docs):
    own, others, _ = docs
    fill(published.stats)
    got, _ = exported(http_get(open_sink(published).url)[2])
    extra = {k: v for k, v in got.items() if k not in own}
    assert extra, "the publishers exported nothing"
    assert extra == {k: v for k, v in others.items() if k in extra}, "type or labels differ from the README"
    assert not set(extra) - set(others), "published but not in the README"


@in_repo
def test_every_metric_the_code_publishes_is_documented(docs):
    _, others, _ = docs
    code = published_in_code()
    assert {"kestrel_rule_reloads_total", "kestrel_rules_loaded"} <= set(code)  # the scan finds the known ones
    assert code == others, {"code": {k: v for k, v in code.items() if others.get(k) != v},
                            "README": {k: v for k, v in others.items() if code.get(k) != v}}


def test_documented_names_follow_prometheus_naming(docs):
    for table in docs:
        for name, (kind, _) in table.items():
            assert naming_problem(name, kind) is None, (name, naming_problem(name, kind))


def test_example_scrape_is_a_real_scrape(published, open_sink, http_get, docs):
    """Every family of the README's example is exported with that type, help text and labels; every
    metric of the sink's own table is in the example."""
    own, others, _ = docs
    fill(published.stats)
    got, helps = exported(http_get(open_sink(published).url)[2])
    example, example_helps = exported(example_scrape(PLUGIN / "README.md"))
    for name, (kind, labels) in example.items():
        assert name in got, f"the example shows {name}, which is not exported"
        assert (kind, example_helps[name]) == (got[name][0], helps[name]), name
        assert labels <= (own | others)[name][1], name  # families without samples in the example show no labels
    assert set(own) <= set(example)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_kestrel_run_exports_only_documented_metrics(tmp_path, docs, http_get):
    """``kestrel run`` as installed: scraped while live, every kestrel_* metric it exports is documented."""
    own, others, _ = docs
    port = _free_port()
    (tmp_path / "rules.toml").write_text(textwrap.dedent('''
        [[rule]]
        id = "docs.nc"
        name = "netcat"
        severity = "high"
        query = 'process where process.name == "nc"'
    '''))
    (tmp_path / "p.toml").write_text(textwrap.dedent(f"""
        [kestrel]
        plugins = ["sink-prometheus"]
        [rules]
        paths = ["rules.toml"]
        watch = true
        [bus]
        flush_interval_ms = 20
        [[sources]]
        type = "jsonl"
        path = "-"
        [[sinks]]
        type = "prometheus"
        address = "127.0.0.1:{port}"
    """))
    proc = subprocess.Popen([sys.executable, "-m", "kestrel_core", "run", "--profile", str(tmp_path / "p.toml")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for i, name in enumerate(["ls", "nc", "id"]):
            ev = {"@timestamp": 1_700_000_000_000 + i, "event": {"category": "process", "action": "exec"},
                  "process": {"name": name, "pid": 1000 + i}}
            proc.stdin.write(json.dumps(ev) + "\n")
        proc.stdin.write("not json\n")
        proc.stdin.flush()

        def scraped():
            try:
                status, _, body = http_get(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                return None
            return body if status == 200 and 'kestrel_alerts_total{rule="docs.nc"' in body else None

        body = wait_for(scraped, timeout=60, what="the run's alert on /metrics")
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, proc.stderr.read()
    got, _ = exported(body)
    documented = own | others
    for name, (kind, labels) in got.items():
        assert name in documented, f"kestrel run exports {name}, which the README does not list"
        assert kind == documented[name][0], name
        assert not labels or labels == documented[name][1], name
    assert {"kestrel_events_processed_total", "kestrel_build_info", "kestrel_rule_reloads_total"} <= set(got)
