"""[[detectors]]: run after the engine on every batch (kestrel run and
replay), their alerts reach the sinks beside rule alerts, and one that raises
is logged and counted while the run, the rules and the other detectors go on."""

from __future__ import annotations

import io
import json
import logging
import types

import orjson

from kestrel_core import hookimpl
from kestrel_core.alert import Alert
from kestrel_core.interfaces import Detector
from kestrel_core.plugins import PluginHost
from kestrel_core.profile import build_profile, read_profile
from kestrel_core.pipeline import Run

RULE = '''id = "test.sh"
name = "sh started"
severity = "low"
query = """process where process.name == "sh" """
'''


class EveryExec(Detector):
    """One alert per exec event, named after the program."""

    PLUGIN_NAME = "every"

    def process(self, events):
        name = self.context.schema.resolve("process.name")
        out = []
        for ev in events:
            ev.settle()
            out.append(Alert(rule_id=f"every.{ev.get(name)}", rule_name="exec", events=[ev],
                             ts_mono_ns=ev.ts_mono_ns, ts_wall_ns=ev.ts_wall_ns))
        return out


class Boom(Detector):
    PLUGIN_NAME = "boom"

    def process(self, events):
        raise RuntimeError("detector bug")

    def flush(self):
        raise RuntimeError("flush bug")


def _host() -> PluginHost:
    host = PluginHost()
    host.load([])
    mod = types.ModuleType("dets")
    mod.kestrel_register_detectors = hookimpl(lambda register: (register(EveryExec), register(Boom)))
    host.add_module("dets", mod)
    return host


def _setup(tmp_path, n: int = 5):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "sh.toml").write_text(RULE)
    names = ["sh", "ls", "sh", "cat", "sh"][:n]
    (tmp_path / "events.jsonl").write_text("".join(
        json.dumps({"@timestamp": f"2026-01-05T08:00:0{i}Z", "event": {"category": ["process"], "action": "exec"},
                    "process": {"name": name}}) + "\n" for i, name in enumerate(names)))
    prof = tmp_path / "p.toml"
    prof.write_text('[rules]\npaths = ["rules"]\n[bus]\nbatch_size = 2\n'
                    '[[sources]]\ntype = "jsonl"\npath = "events.jsonl"\n'
                    '[[sinks]]\ntype = "jsonl"\npath = "alerts.jsonl"\n'
                    '[[detectors]]\ntype = "boom"\n[[detectors]]\ntype = "every"\n')
    return prof


def test_run_delivers_detector_alerts_and_isolates_a_failing_detector(tmp_path, caplog):
    prof = _setup(tmp_path)
    host = _host()
    data, validator = read_profile(prof)
    job = Run.build(build_profile(data, validator, host.registry), host)
    job.open()
    with caplog.at_level(logging.ERROR, logger="kestrel"):
        assert job.execute() == "eof"
    ids = [json.loads(line)["rule"]["id"] for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    # each batch: the rule's alerts first, then the detectors' (batch_size 2: [sh ls] [sh cat] [sh])
    assert ids == ["test.sh", "every.sh", "every.ls", "test.sh", "every.sh", "every.cat", "test.sh", "every.sh"]
    stats = job.context.stats
    assert stats.detector_errors == {"boom": 4}  # 3 batches + flush
    assert "detector 'boom' failed in process: RuntimeError: detector bug" in caplog.text
    assert "detector 'boom' failed in flush: RuntimeError: flush bug" in caplog.text
    assert any("detector boom: 4" in line for line in job.stop_summary("eof"))
    assert stats.extra["metrics"]["kestrel_detector_errors_total"]["values"] == {"boom": 4}


def test_replay_runs_the_profiles_detectors_like_run(tmp_path):
    from kestrel_core.replay import replay

    prof = _setup(tmp_path)
    from kestrel_core.cli import main  # noqa: F401 - record through the CLI's code path
    from click.testing import CliRunner

    rec = CliRunner().invoke(main, ["record", "--input", str(tmp_path / "events.jsonl"), "-o",
                                    str(tmp_path / "ev.klog")])
    assert rec.exit_code == 0, rec.output
    host = _host()
    data, validator = read_profile(prof)
    profile = build_profile(data, validator, host.registry)
    out = io.BytesIO()
    result = replay([tmp_path / "ev.klog"], [tmp_path / "rules"], out, profile=profile, host=host)
    ids = [a.rule_id for a in result.alerts]
    # replay batches are larger (1,024): same alerts, rules then detectors per batch
    assert sorted(ids) == sorted(["test.sh"] * 3 + ["every.sh"] * 3 + ["every.ls", "every.cat"])
    footer = orjson.loads(out.getvalue().splitlines()[-1])
    assert footer["detectors"] == ["boom", "every"]
    assert footer["detector_errors"] == {"boom": 2}  # one batch + flush
    assert footer["counts"]["alerts"] == 8


def test_replay_without_a_profile_has_no_detector_keys(tmp_path):
    """Replays without detectors keep their exact output (the demo's expected alert file)."""
    from kestrel_core.replay import replay

    _setup(tmp_path)
    from click.testing import CliRunner

    from kestrel_core.cli import main

    assert CliRunner().invoke(main, ["record", "--input", str(tmp_path / "events.jsonl"), "-o",
                                     str(tmp_path / "ev.klog")]).exit_code == 0
    out = io.BytesIO()
    replay([tmp_path / "ev.klog"], [tmp_path / "rules"], out)
    footer = orjson.loads(out.getvalue().splitlines()[-1])
    assert "detectors" not in footer and "detector_errors" not in footer


def test_source_push_down_is_widened_to_what_detectors_need(tmp_path):
    """A rule pack narrows what sources deliver (literal filters, categories);
    a detector reading other events must still get them."""
    from kestrel_core.detectors import DetectorSet
    from kestrel_core.interfaces import Interest, LiteralFilter
    from kestrel_core.runtime import Stats

    class FileOnly(EveryExec):
        PLUGIN_NAME = "file-only"
        CATEGORIES = frozenset({"file"})

    rules = Interest(categories=frozenset({"process"}), fields=frozenset({"process.name"}), wants_all=False,
                     filters=(LiteralFilter("process", (("process.name", ("sh",)),)),))
    ctx = types.SimpleNamespace(schema=None)
    narrow = DetectorSet([FileOnly(None, ctx)], Stats()).widen(rules)
    assert narrow.categories == {"process", "file"} and not narrow.wants_all and narrow.filters is None
    everything = DetectorSet([FileOnly(None, ctx), EveryExec(None, ctx)], Stats()).widen(rules)
    assert everything.wants_all and everything.filters is None
    assert DetectorSet([], Stats()).widen(rules) is rules

    prof = _setup(tmp_path)  # a rule on process.name == "sh" and two detectors that need every category
    host = _host()
    data, validator = read_profile(prof)
    job = Run.build(build_profile(data, validator, host.registry), host)
    seen = []
    src = job.sources[0][0]
    src.set_interest = seen.append
    job.detectors.detectors = [FileOnly(None, job.context)]
    from kestrel_core.reload import RuleReloader  # noqa: F401 - the swap path below is the reload's

    job.reloader = types.SimpleNamespace(take=lambda: types.SimpleNamespace(
        engine=job.engine, packset=job.packset, extra={}), applied=lambda *a: None)
    job.engine.adopt_state = lambda other: (0, 0)
    job._swap_engine()
    (after_reload,) = seen
    assert after_reload.filters is None and "file" in after_reload.categories
