"""``run --qc``, ``demo`` (QC by default) and ``batch --qc`` (per-scan pages + cohort.html) end to end."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cohort_helpers import write_cohort, write_phantom
from qc_browser import dump_dom

from limbseg_rt.cli import main as cli_main
from limbseg_rt.runtime.errors import EXIT_DEPENDENCY, EXIT_OK
from limbseg_rt.runtime.qc.cohort_page import OUTLIER_RULE, tukey_fences, write_cohort_page

pytest.importorskip("PIL", reason='QC pictures need Pillow (pip install "limbseg-rt[qc]")')


def test_run_qc_writes_pictures_and_page_beside_the_labels(tiny_unet_path, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    scan = write_phantom(tmp_path / "in" / "knee.nii.gz", 4)
    out = tmp_path / "out"
    out.mkdir()
    code = cli_main(
        [
            "run",
            str(scan),
            "--model",
            str(tiny_unet_path),
            "--provider",
            "cpu",
            "--qc",
            "--out",
            str(out / "seg.nii.gz"),
        ]
    )
    assert code == EXIT_OK
    names = sorted(p.name for p in out.iterdir())
    assert "seg_report.html" in names
    assert any(n.startswith("seg_qc_axial_") and n.endswith(".png") for n in names)
    assert "seg_qc_coronal.png" in names
    assert "seg_report.html" in capsys.readouterr().out


def test_run_without_qc_writes_no_pictures(tiny_unet_path, tmp_path):
    scan = write_phantom(tmp_path / "a.nii.gz", 5)
    assert cli_main(["run", str(scan), "--model", str(tiny_unet_path), "--provider", "cpu"]) == EXIT_OK
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.html"))


@pytest.mark.parametrize("command", ["run", "batch"])
def test_qc_without_pillow_is_one_line_with_the_install_hint_and_writes_nothing(tiny_unet_path, tmp_path, command):
    scan = write_phantom(tmp_path / "b.nii.gz", 6)
    args = ["run", str(scan)] if command == "run" else ["batch", str(scan), "--out", str(tmp_path / "cohort")]
    args += ["--model", str(tiny_unet_path), "--provider", "cpu", "--qc"]
    code = f"import sys; sys.modules['PIL'] = None\nfrom limbseg_rt.cli import main\nsys.exit(main({args!r}))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_DEPENDENCY, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "limbseg-rt[qc]"' in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.nii.gz"]


def test_demo_writes_the_report_page_by_default(tmp_path, capsys):
    out = tmp_path / "demo"
    code = cli_main(["demo", "--out-dir", str(out), "--slices", "12", "--provider", "cpu"])
    assert code == EXIT_OK
    page = out / "phantom_seed0_report.html"
    assert page.is_file()
    dom = dump_dom(page)
    assert 'id="demo-model"' in dom  # a demo model, said on the page
    assert len(re.findall(r'<tr data-code="', dom)) == 37
    assert (
        cli_main(["demo", "--out-dir", str(tmp_path / "plain"), "--slices", "12", "--provider", "cpu", "--no-qc"])
        == EXIT_OK
    )
    assert not list((tmp_path / "plain").glob("*.html"))


def test_batch_qc_writes_scan_pages_and_a_cohort_page_that_links_them(tiny_unet_path, tmp_path, capsys):
    scans = write_cohort(tmp_path / "scans", 3)
    out = tmp_path / "cohort"
    code = cli_main(
        [
            "batch",
            *map(str, scans),
            "--out",
            str(out),
            "--model",
            str(tiny_unet_path),
            "--provider",
            "cpu",
            "--workers",
            "1",
            "--qc",
        ]
    )
    assert code == EXIT_OK
    cohort = out / "cohort.html"
    assert cohort.is_file()
    dom = dump_dom(cohort)
    links = re.findall(r'<a href="([^"]+)">', dom)
    assert sorted(links) == sorted(f"{p.name.split('.')[0]}/{p.name.split('.')[0]}_report.html" for p in scans)
    for link in links:
        assert (out / link).is_file()
    assert "Tukey" in dom and "Q3 + 1.5" in dom


def _fake_cohort(root: Path, volumes: dict[str, float]) -> Path:
    root.mkdir(parents=True)
    with open(root / "cohort.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["scan_id", "status", "exit_code", "message", "index", "code", "name", "volume_ml", "imat_percent"])
        for sid, v in volumes.items():
            w.writerow([sid, "ok", 0, "", 36, "VL", "vastus lateralis", v, 4.0])
            w.writerow([sid, "ok", 0, "", 33, "TA", "tibialis anterior", 10.0, 3.0])
        w.writerow(["bad", "failed", 3, "not a NIfTI file", "", "", "", "", ""])
    return root


def test_the_cohort_page_marks_outliers_by_the_stated_rule(tmp_path):
    vols = {"a": 100.0, "b": 104.0, "c": 98.0, "d": 101.0, "e": 103.0, "big": 180.0}
    root = _fake_cohort(tmp_path / "c", vols)
    lo, hi = tukey_fences(list(vols.values()))
    assert hi < 180.0 and lo < 98.0
    written = write_cohort_page(root)
    dom = dump_dom(written["cohort_html"])
    marked = re.findall(r'<tr class="outlier" data-scan="([^"]+)" data-muscle="([^"]+)"', dom)
    assert marked == [("big", "VL")]
    assert OUTLIER_RULE.split(";")[0][:40] in dom
    assert 'data-scan="bad"' in dom and "not a NIfTI file" in dom  # a failed scan is listed
    assert "IMAT (T1w estimate) per muscle across scans" in dom
    assert "Volume per muscle across scans" in dom


def test_fewer_than_four_scans_mark_no_outliers(tmp_path):
    root = _fake_cohort(tmp_path / "c", {"a": 1.0, "b": 2.0, "c": 90.0})
    dom = dump_dom(write_cohort_page(root)["cohort_html"])
    assert 'class="outlier"' not in dom and "No outliers" in dom


def test_the_cohort_page_needs_a_batch_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="limbseg-rt batch"):
        write_cohort_page(tmp_path)


def test_run_qc_draws_the_same_pictures_for_an_lps_copy_of_the_scan(tiny_unet_path, tmp_path):
    import nibabel as nib
    import numpy as np
    from PIL import Image

    ras = write_phantom(tmp_path / "ras.nii.gz", 8)
    img = nib.load(str(ras))
    t = nib.orientations.ornt_transform(nib.io_orientation(img.affine), nib.orientations.axcodes2ornt(("L", "P", "S")))
    lps = nib.Nifti1Image(
        nib.orientations.apply_orientation(np.asarray(img.dataobj), t),
        img.affine @ nib.orientations.inv_ornt_aff(t, img.shape),
    )
    nib.save(lps, str(tmp_path / "lps.nii.gz"))
    for name in ("ras", "lps"):
        assert (
            cli_main(
                ["run", str(tmp_path / f"{name}.nii.gz"), "--model", str(tiny_unet_path), "--provider", "cpu", "--qc"]
            )
            == EXIT_OK
        )
    ras_png = sorted(p.name[len("ras") :] for p in tmp_path.glob("ras_qc_*.png"))
    assert ras_png and ras_png == sorted(p.name[len("lps") :] for p in tmp_path.glob("lps_qc_*.png"))
    for suffix in ras_png:
        a = np.asarray(Image.open(tmp_path / f"ras{suffix}").convert("RGB"))
        b = np.asarray(Image.open(tmp_path / f"lps{suffix}").convert("RGB"))
        assert np.array_equal(a, b), suffix


def test_demo_without_pillow_still_runs_and_says_how_to_get_pictures(tmp_path):
    """The README's first command installs no extras: the demo must work without Pillow."""
    out = tmp_path / "demo"
    code = (
        "import sys; sys.modules['PIL'] = None\n"
        "from limbseg_rt.cli import main\n"
        f"sys.exit(main(['demo', '--out-dir', {str(out)!r}, '--slices', '8', '--provider', 'cpu']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert 'no QC pictures: QC pictures need Pillow: pip install "limbseg-rt[qc]"' in proc.stdout
    assert (out / "phantom_seed0_labels.nii.gz").is_file() and not list(out.glob("*.html"))
