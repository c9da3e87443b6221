"""``limbseg-rt evaluate``: table, JSON/CSV files, label tables, refusal of mismatched grids."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.cli import main
from limbseg_rt.runtime.errors import EXIT_INPUT, EXIT_OUTPUT
from limbseg_rt.runtime.model.labels import Label, LabelTable
from limbseg_rt.runtime.report.metrics import evaluate_files

SPACING = (0.7, 1.3, 5.0)


@pytest.fixture()
def pair(tmp_path):
    ref = np.zeros((30, 24, 8), np.uint8)
    ref[4:14, 4:14, 2:6] = 1
    ref[16:27, 8:20, 1:7] = 2
    ref[3:6, 18:22, 1:3] = 3
    pred = np.roll(ref, 1, axis=0)
    pred[pred == 3] = 0  # label 3 missed
    affine = np.diag(list(SPACING) + [1.0])
    p, r = tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(pred, affine), str(p))
    nib.save(nib.Nifti1Image(ref, affine), str(r))
    return p, r


def test_prints_table_with_names_and_mean_and_writes_json_csv(pair, tmp_path, capsys):
    p, r = pair
    j, c = tmp_path / "out.json", tmp_path / "out.csv"
    rc = main(["evaluate", str(p), str(r), "--json", str(j), "--csv", str(c)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "adductor brevis" in out and "adductor magnus" in out and "missing_in_prediction" in out
    for header in ("DSC", "RVE %", "HD mm", "HD95 mm", "ASSD mm", "pred mL", "ref mL"):
        assert header in out
    mean_line = next(line for line in out.splitlines() if line.split()[:1] == ["mean"])
    expected = evaluate_files(p, r)
    assert f"{expected.mean.dsc:.3f}" in mean_line
    data = json.loads(j.read_text())
    assert [row["code"] for row in data["labels"]][:3] == ["ADB", "ADL", "ADM"]
    assert data["labels"][0]["dsc"] == pytest.approx(expected.rows[0].dsc)
    assert data["mean"]["n_labels"] == 3
    rows = list(csv.DictReader(c.open()))
    assert len(rows) == 37 + 1 and rows[-1]["name"] == "mean"
    assert float(rows[1]["hd95_mm"]) == pytest.approx(expected.rows[1].hd95_mm)
    assert rows[2]["hd_mm"] == "" and rows[2]["flag"] == "missing_in_prediction"


def test_custom_label_table(pair, tmp_path, capsys):
    p, r = pair
    table = LabelTable(
        (
            Label(0, "background", "BG", (0, 0, 0)),
            Label(1, "left thigh", "LT", (255, 0, 0)),
            Label(2, "right thigh", "RT", (0, 255, 0)),
            Label(3, "spot", "SP", (0, 0, 255)),
        )
    )
    t = tmp_path / "table.json"
    t.write_text(table.to_json())
    assert main(["evaluate", str(p), str(r), "--labels", str(t)]) == 0
    out = capsys.readouterr().out
    assert "left thigh" in out and "right thigh" in out and "adductor" not in out


def test_mismatched_grid_is_one_line_and_exit_code_3(pair, tmp_path):
    p, r = pair
    shifted = tmp_path / "shifted.nii.gz"
    img = nib.load(str(p))
    affine = img.affine.copy()
    affine[0, 3] += 4.0
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), affine), str(shifted))
    out = subprocess.run(
        [sys.executable, "-m", "limbseg_rt", "evaluate", str(shifted), str(r)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == EXIT_INPUT == 3
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "different grids" in lines[0] and "origins differ by 4 mm" in lines[0]
    assert out.stdout == ""


def test_missing_input_and_unwritable_output(pair, tmp_path, capsys):
    p, r = pair
    assert main(["evaluate", str(tmp_path / "none.nii.gz"), str(r)]) == EXIT_INPUT
    assert "not found" in capsys.readouterr().err
    rc = main(["evaluate", str(p), str(r), "--json", str(tmp_path / "no" / "dir" / "o.json")])
    assert rc == EXIT_OUTPUT
    assert "folder does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["evaluate", str(p), str(r), "--labels", str(bad)]) == EXIT_INPUT


def test_evaluate_command_without_scipy_exits_2_with_one_line(tmp_path):
    ref = np.zeros((9, 8, 5), np.uint8)
    ref[2:6, 2:6, 1:4] = 1
    p, r = tmp_path / "p.nii.gz", tmp_path / "r.nii.gz"
    nib.save(nib.Nifti1Image(np.roll(ref, 1, axis=0), np.eye(4)), str(p))
    nib.save(nib.Nifti1Image(ref, np.eye(4)), str(r))
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'scipy':\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"from limbseg_rt.cli import main\nsys.exit(main(['evaluate', {str(p)!r}, {str(r)!r}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 12, out.stderr  # a missing extra: EXIT_DEPENDENCY
    assert out.stderr.strip() == (
        "limbseg-rt: error: surface distances (HD, HD95, ASSD) need scipy, which is not installed: "
        'pip install "limbseg-rt[eval]"'
    )
