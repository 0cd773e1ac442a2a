"""Rule hot reload: how long from a rule file write to a ready engine, and the swap.

    .venv/bin/python benchmarks/reload_bench.py [--rules 60] [--repeat 10] [--pack rules/linux]

A pack of ``--rules`` generated rules (a quarter of them sequences), or a real
pack (``--pack``, copied to a temporary directory), is watched by a
:class:`kestrel_core.reload.RuleReloader` (the real watchfiles watcher).  Each
round rewrites one rule file atomically and measures, on the main thread:

* write -> ready: from ``os.replace`` until ``take()`` hands over the new engine
  (watcher latency + debounce step + loading + compiling the whole set);
* compile: ``load_packs`` + engine build alone (no watcher), as the reloader does them;
* swap: ``adopt_state`` (moving sequence state; 1,000 pending sequences held).

Prints min / median / max per measure (milliseconds).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kestrel_core.eql.engine import DetectionEngine  # noqa: E402
from kestrel_core.event import Event  # noqa: E402
from kestrel_core.packs import load_packs  # noqa: E402
from kestrel_core.reload import RuleReloader  # noqa: E402
from kestrel_core.runtime import Stats  # noqa: E402
from kestrel_core.schema import Schema  # noqa: E402

RULE = '''id = "bench.r{i}"
name = "rule {i}"
description = "generated"
query = 'process where process.name == "tool{i}{suffix}" and process.args : "*-x*"'
'''
SEQ = '''id = "bench.r{i}"
name = "rule {i}"
description = "generated"
query = \'\'\'
sequence by process.pid with maxspan=5m
  [process where process.name == "s{i}{suffix}"]
  [file where file.path : "/tmp/*"]
\'\'\'
'''


def write_pack(root: Path, n: int) -> list[Path]:
    (root / "pack.toml").write_text('[pack]\nname = "bench"\nversion = "1"\npriority = 1\n')
    files = []
    for i in range(n):
        f = root / f"r{i:03d}.toml"
        f.write_text((SEQ if i % 4 == 0 else RULE).format(i=i, suffix=""))
        files.append(f)
    return files


def replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def stats(xs: list[float]) -> str:
    return f"{min(xs):9.1f} {statistics.median(xs):9.1f} {max(xs):9.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--pack", help="a real pack directory to copy instead of generated rules")
    ap.add_argument("--no-reuse", dest="reuse", action="store_false",
                    help="compile every predicate again (no reuse of the previous engine's)")
    args = ap.parse_args()
    schema = Schema.ecs()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pack"
        if args.pack:
            shutil.copytree(args.pack, root)
            files = sorted(p for p in root.rglob("*.toml") if p.name != "pack.toml")
        else:
            root.mkdir()
            files = write_pack(root, args.rules)
        current = load_packs([root])
        assert current.ok, [str(e) for e in current.errors]

        def build(ps, reuse=None):
            return DetectionEngine(schema, ps.rules, reuse=reuse if args.reuse else None), {}

        engine = build(current)[0]
        reloader = RuleReloader([root], build, current, Stats(), engine=engine)
        reloader.start()
        deadline = time.monotonic() + 10
        while not reloader.ready.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        ready_ms, compile_ms, swap_ms = [], [], []
        for r in range(args.repeat):
            target = files[r % len(files)]
            # change the meaning (a comment alone leaves the hash, and the engine, as they are)
            text = target.read_text().replace('name = "', f'name = "round {r} ', 1)
            t0 = time.perf_counter()
            replace(target, text)
            swap = None
            while swap is None and time.perf_counter() - t0 < 10:
                swap = reloader.take()
                time.sleep(0.001)
            assert swap is not None, "no reload within 10 s"
            ready_ms.append((time.perf_counter() - t0) * 1000)
            t1 = time.perf_counter()
            ps = load_packs([root], check_queries=False)  # as the reloader does: the engine parses
            build(ps, engine)
            compile_ms.append((time.perf_counter() - t1) * 1000)
            # swap with state: 1,000 pending sequences in the old engine
            seq_rule = next((cr for cr in engine.seq_rules), None)
            if seq_rule is not None and not seq_rule.matcher.n_partials:
                fid = schema.resolve("process.name")
                pid = schema.resolve("process.pid")
                name = seq_rule.rule.query.split('"')[1]
                evs = [Event("process", {fid: name, pid: k}, k, k, k + 1) for k in range(1000)]
                engine.process_batch(evs)
            t2 = time.perf_counter()
            swap.engine.adopt_state(engine)
            swap_ms.append((time.perf_counter() - t2) * 1000)
            engine = swap.engine
        reloader.stop()
    n = len(current.rules)
    print(f"rule hot reload ({'reusing' if args.reuse else 'not reusing'} compiled predicates), {n} rules ({sum(r.query.lstrip().startswith('sequence') for r in current.rules)} "
          f"sequences), {args.repeat} rounds")
    print(f"{'measure':<16} {'min ms':>9} {'median':>9} {'max':>9}")
    print(f"{'write -> ready':<16} {stats(ready_ms)}")
    print(f"{'compile':<16} {stats(compile_ms)}")
    print(f"{'swap (1k seqs)':<16} {stats(swap_ms)}")


if __name__ == "__main__":
    main()
