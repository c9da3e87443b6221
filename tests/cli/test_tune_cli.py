"""``limbseg-rt tune`` then ``limbseg-rt run``: the measured precision runs and the run says why."""

from __future__ import annotations

import json

from limbseg_rt.cli import main
from limbseg_rt.runtime.phantom.generate import make_phantom


def test_tune_saves_a_choice_that_run_then_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIMBSEG_RT_CACHE", str(tmp_path / "cache"))
    image, _ = make_phantom(3, slices=6)
    scan = tmp_path / "scan.nii.gz"
    image.to_filename(scan)

    assert main(["run", str(scan), "--provider", "cpu", "--out", str(tmp_path / "a.nii.gz")]) == 0
    before = capsys.readouterr().out
    assert "precision auto -> int8: rule: int8 before fp32 on cpu" in before and "not measured" in before

    assert main(["tune", "--model", "unet", "--provider", "cpu", "--slices", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "ISA class" in out and "cpu       unet            auto -> " in out
    chosen = json.loads((tmp_path / "cache" / "precision-profile.json").read_text())["entries"]["cpu/unet"]["precision"]

    report = tmp_path / "b.json"
    assert (
        main(["run", str(scan), "--provider", "cpu", "--out", str(tmp_path / "b.nii.gz"), "--report", str(report)]) == 0
    )
    after = capsys.readouterr().out
    assert f"precision auto -> {chosen}: measured by `limbseg-rt tune`" in after
    engine = json.loads(report.read_text())["manifest"]["engine"]
    assert engine["precision"] == chosen and engine["details"]["precision_choice"]["how"] == "measured"


def test_tune_dry_run_saves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIMBSEG_RT_CACHE", str(tmp_path / "cache"))
    assert main(["tune", "--model", "sc-unet", "--provider", "cpu", "--dry-run"]) == 0
    assert "auto -> int8 (only int8 bundled: nothing to choose)" in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()
