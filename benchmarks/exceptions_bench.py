"""What rule exceptions and alert suppression cost: the bundled Linux pack
over the generated fleet stream, without exceptions, with a shared list of
``--entries`` entries named by every rule, and with suppression on every rule.

    .venv/bin/python benchmarks/exceptions_bench.py [--events N] [--runs R] [--entries 20]

Events: benchmarks/generate.py (seed 7), normalized once.  Each variant gets a
fresh engine per run and the whole stream in batches of 1024 (literal-index
matcher); the variants' runs are interleaved (order flipped every run) and
events/s is the median of ``--runs`` runs.  The list's entries
(``process.executable ==``, ``process.name in``, ``file.path :``,
``process.command_line :`` and ``source.ip cidr``, cycling) name paths and
names the stream does not contain, so every variant raises the same alerts
(checked): the measure is the predicate's extra work, not fewer alerts.
Suppression (``by = ["process.entity_id"], window = "5m"`` on every rule)
is timed apart, per alert, since it runs on alerts, not events.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import ensure_stream, load_stream  # noqa: E402

OPS = [("process.executable", "==", '["/opt/never-{i}/bin/tool"]'),
       ("process.name", "in", '["never-a-{i}", "never-b-{i}"]'),
       ("file.path", ":", '["/srv/never-{i}/*"]'),
       ("process.command_line", ":", '["*never-installer-{i} *"]'),
       ("source.ip", "cidr", '["192.0.2.{i}/32"]')]


def with_list(pack: Path, dest: Path, entries: int) -> Path:
    """A copy of ``pack`` whose rules all name list ``bench`` (``entries`` entries, in pack.toml)."""
    import shutil

    shutil.copytree(pack, dest)
    text = (dest / "pack.toml").read_text() + '\n[lists.bench]\ndescription = "benchmark"\n'
    for i in range(entries):
        field, op, values = OPS[i % len(OPS)]
        text += (f'\n[[lists.bench.entry]]\nreason = "bench {i}"\nfield = "{field}"\nop = "{op}"\n'
                 f"values = {values.format(i=i)}\n")
    (dest / "pack.toml").write_text(text)
    for f in dest.rglob("*.toml"):
        if f.name == "pack.toml":
            continue
        body = f.read_text()
        if "exception_lists = [" in body:
            body = body.replace('exception_lists = [', 'exception_lists = ["bench", ', 1)
        else:
            body = body.replace("\nquery = ", '\nexception_lists = ["bench"]\nquery = ', 1)
        f.write_text(body)
    return dest


def run(schema, rules, evs) -> tuple[float, list]:
    from kestrel_core.eql.engine import DetectionEngine

    eng = DetectionEngine(schema, rules)
    assert not eng.rule_errors, eng.rule_errors[:2]
    alerts = []
    gc.collect()
    t0 = time.perf_counter()
    for i in range(0, len(evs), 1024):
        alerts.extend(eng.process_batch(evs[i:i + 1024]))
    alerts.extend(eng.flush())
    return len(evs) / (time.perf_counter() - t0), alerts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--entries", type=int, default=20)
    a = ap.parse_args(argv)
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.packs import load_packs
    from kestrel_core.plugins import rules_schema
    from kestrel_core.runtime import RunContext
    from kestrel_core.suppression import SuppressSpec, Suppressor

    raw, _ts, _inj = load_stream(ensure_stream(a.events, 7))
    schema = rules_schema()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    gc.disable()
    evs = [norm.normalize(e, "bench") for e in raw[:a.events]]
    for i, e in enumerate(evs, 1):
        e.event_id = i
    gc.enable()
    plain = load_packs([ROOT / "rules" / "linux"])
    with tempfile.TemporaryDirectory() as tmp:
        excepted = load_packs([with_list(ROOT / "rules" / "linux", Path(tmp) / "linux", a.entries)])
    assert plain.ok and excepted.ok, excepted.errors[:2]
    assert all(len(r.exceptions) >= a.entries for r in excepted.rules)
    variants = (("no exceptions", plain.rules), (f"{a.entries}-entry list on every rule", excepted.rules))
    eps: dict[str, list[float]] = {name: [] for name, _ in variants}
    alerts: dict[str, list] = {}
    for i in range(a.runs):  # interleaved, the order flipped every run: a loaded machine drifts
        for name, rules in (variants if i % 2 == 0 else variants[::-1]):
            x, al = run(schema, rules, evs)
            eps[name].append(x)
            ids = [(al_.rule_id, tuple(e.event_id for e in al_.events)) for al_ in al]
            assert alerts.setdefault(name, ids) == ids, f"{name}: runs differ"
    assert alerts[variants[0][0]] == alerts[variants[1][0]], "the exceptions changed the alerts"
    rows = [(name, statistics.median(eps[name]), len(alerts[name])) for name, _ in variants]
    # suppression: per alert, on the alerts of the plain pack (repeated to a measurable count)
    _, found = run(schema, plain.rules, evs)
    spec = SuppressSpec(("process.entity_id",), 300 * 10**9, "5m")
    stream = found * max(1, 200_000 // max(1, len(found)))
    per = []
    for _ in range(a.runs):
        sup = Suppressor(schema, plain.rules, default=spec)
        t0 = time.perf_counter()
        kept = sum(sup.offer(al) for al in stream)
        per.append((time.perf_counter() - t0) / len(stream) * 1e9)
        for al in found:
            al.fields.pop("kestrel.suppressed_count", None)
    print(f"{len(evs):,} events, bundled pack ({len(plain.rules)} rules), median of {a.runs} runs\n")
    print(f"{'variant':<34} {'events/s':>10} {'vs none':>8} {'alerts':>7}")
    for name, x, n in rows:
        print(f"{name:<34} {x:>10,.0f} {x / rows[0][1]:>8.2f} {n:>7,}")
    print(f"\nsuppression: {statistics.median(per):,.0f} ns per alert offered ({len(stream):,} alerts, "
          f"{kept:,} kept)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
