"""Long file commands show a progress bar on a terminal (stderr) and nothing
else changes: replay, export and record --input write the same bytes as with
stderr on a pipe, and a pipe sees no bar."""

from __future__ import annotations

from pathlib import Path

import pytest

from kestrel_core.testing import run_kestrel, run_on_a_terminal

ROOT = Path(__file__).resolve().parents[2]
CAPTURE_KLOG = ROOT / "demo" / "capture.klog"
CAPTURE_JSONL = ROOT / "demo" / "capture.jsonl"
RULES = ROOT / "rules" / "linux"


def _both(tmp_path: Path, name: str, *args: str) -> tuple[bytes, bytes, str]:
    """(output written with stderr on a pipe, with stderr on a terminal, what the terminal showed)."""
    piped, shown = tmp_path / f"{name}-pipe", tmp_path / f"{name}-tty"
    plain = run_kestrel(*args, "-o", str(piped))
    assert plain.returncode == 0, plain.stderr
    assert "━" not in plain.stderr  # no bar drawn on a pipe
    code, _, screen = run_on_a_terminal(*args, "-o", str(shown))
    assert code == 0, screen.decode(errors="replace")
    return piped.read_bytes(), shown.read_bytes(), screen.decode(errors="replace")


def test_replay_shows_a_bar_with_alerts_so_far(tmp_path):
    piped, shown, screen = _both(tmp_path, "alerts", "replay", str(CAPTURE_KLOG), "--rules", str(RULES))
    assert piped == shown and piped.count(b"\n") > 2
    assert f"replaying {CAPTURE_KLOG}" in screen and "alerts" in screen
    # and the per-rule table, as on a pipe
    assert "rule" in screen.lower()


def test_export_shows_a_bar(tmp_path):
    piped, shown, screen = _both(tmp_path, "export", "export", str(CAPTURE_KLOG))
    assert piped == shown and piped
    assert f"exporting {CAPTURE_KLOG}" in screen


def test_record_from_jsonl_shows_a_bar_and_writes_the_same_events(tmp_path):
    piped, shown, screen = _both(tmp_path, "log", "record", "--input", str(CAPTURE_JSONL))
    assert f"recording {CAPTURE_JSONL}" in screen
    exported = []
    for log in ("log-pipe", "log-tty"):
        out = run_kestrel("export", str(tmp_path / log))
        assert out.returncode == 0, out.stderr
        exported.append(out.stdout)
    assert exported[0] == exported[1] and exported[0].count("\n") == CAPTURE_JSONL.read_bytes().count(b"\n")


@pytest.mark.parametrize("updates", [True, False])
def test_replay_progress_callback_sees_bytes_grow_to_the_log_size(tmp_path, updates):
    """The callback the bar uses: bytes read only grow, and reach the log's size."""
    import io

    from kestrel_core.replay import replay

    seen: list[tuple[int, int]] = []
    out = io.BytesIO()
    result = replay([CAPTURE_KLOG], [RULES], out, progress=(lambda done, alerts: seen.append((done, alerts)))
                    if updates else None)
    if not updates:
        assert not seen and result.alerts
        return
    assert seen, "no progress reported"
    done = [d for d, _ in seen]
    assert done == sorted(done) and 0 < done[-1] <= CAPTURE_KLOG.stat().st_size
    assert [a for _, a in seen] == sorted(a for _, a in seen) and seen[-1][1] <= len(result.alerts)


def test_rules_test_shows_a_bar_and_the_same_table():
    """``kestrel rules test`` over the Linux pack: tests done of all, failures so far; the table on stdout unchanged."""
    plain = run_kestrel("rules", "test", str(RULES))
    assert plain.returncode == 0, plain.stderr
    assert "━" not in plain.stderr
    code, out, screen = run_on_a_terminal("rules", "test", str(RULES))
    assert code == 0
    assert out.decode() == plain.stdout and "passed, 0 failed" in plain.stdout
    text = screen.decode(errors="replace")
    assert "running golden tests" in text and "tests" in text
