"""`warmstart demo --quick`: the whole lecture offline on bundled digits, through the real CLI."""

from __future__ import annotations

import json
import math

import pytest

from warmstart.cli import main


@pytest.mark.slow
def test_demo_quick_runs_offline_and_writes_one_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WARMSTART_OFFLINE", "1")
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as e:
        main(["demo", "--quick", "--out", str(out), "--device", "cpu", "-q"])
    assert e.value.code == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    assert stdout[-1] == str(out / "report.html")  # the demo ends by printing its report's path

    html = (out / "report.html").read_text()
    for title in ("Overview", "Symmetry", "Depth", "Compare"):
        assert title in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "<script" not in html  # self-contained

    s = json.loads((out / "summary.json").read_text())
    assert set(s["parts"]) == {"symmetry", "depth", "transfer"}
    sym = s["symmetry"]
    assert sym["constant"]["layers"]["conv1"]["distinct"] == 1 and sym["random"]["layers"]["conv1"]["distinct"] == 32
    dep = s["depth"]
    assert abs(dep["xavier"]["final_train_loss"] - math.log(10)) < 0.05
    assert dep["he"]["final_train_loss"] < math.log(10) - 0.3
    assert {r["strategy"] for r in s["transfer"]["runs"]} == {"scratch", "transfer", "finetune-all"}
    for part in ("symmetry", "depth", "transfer"):  # each part is an ordinary run directory
        assert json.loads((out / part / "config.json").read_text())["command"] in ("symmetry", "depth", "compare")
