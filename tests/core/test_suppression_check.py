"""Regressions found by trying suppression as a new user: a misspelt ``by``
field used to be accepted, so every alert of the rule had the key (null) and
one alert per window stood for all of them."""

from __future__ import annotations

import pytest

from kestrel_core.packs import load_packs
from kestrel_core.startup import load_profile

from .test_suppression import pack


def test_a_misspelt_by_field_of_a_rule_is_located_with_the_nearest_field(tmp_path):
    root = pack(tmp_path / "p", suppress='suppress = { by = ["process.entity_idd"], window = "5m" }')
    ps = load_packs([root])
    (err,) = ps.errors
    assert (err.file, err.line, err.column) == (str(root / "chmod.toml"), 4, 20)  # the field's opening quote
    assert "unknown field 'process.entity_idd' in 'by'; did you mean process.entity_id?" in err.message
    assert [r.id for r in ps.rules] == ["s.nc"]  # the rule is left out, as for any error


def test_known_by_fields_still_load(tmp_path):
    root = pack(tmp_path / "p", suppress='suppress = { by = ["process.entity_id", "host.name"], window = "5m" }')
    ps = load_packs([root])
    assert not ps.errors and sorted(r.id for r in ps.rules) == ["s.chmod", "s.nc"]


def test_a_misspelt_by_field_of_the_profile_default_is_a_located_profile_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[rules]\npaths = []\nsuppress = { by = ["proces.name"], window = "1m" }\n')
    with pytest.raises(Exception) as exc:
        load_profile(bad)
    text = str(exc.value)
    assert f"{bad}:3:12:" in text, text
    assert "unknown field 'proces.name' in 'by'; did you mean process.name?" in text


def test_replay_says_how_many_alerts_it_suppressed(tmp_path):
    """kestrel replay's stderr used to say nothing of suppression (only the
    footer counted it), so a user comparing it with a run saw alerts vanish."""
    import json

    from kestrel_core.testing import run_kestrel

    from .test_suppression import EVENTS

    events = tmp_path / "ev.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    log = tmp_path / "ev.klog"
    assert run_kestrel("record", "--input", str(events), "-o", str(log)).returncode == 0
    res = run_kestrel("replay", str(log), "--rules", str(pack(tmp_path / "p")), "-o", str(tmp_path / "out.jsonl"))
    assert res.returncode == 0, res.stderr
    assert "alerts suppressed as repeats within their window: 7 (2 summary record(s))" in res.stderr
