"""``limbseg-rt batch`` from the command line: exit codes, messages, progress, and SIGTERM mid-cohort."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import pytest
from cohort_helpers import hidden_entries, write_cohort, write_corrupt

from limbseg_rt.cli import main as cli_main
from limbseg_rt.runtime.errors import EXIT_DEPENDENCY, EXIT_MODEL, EXIT_OK, EXIT_OUTPUT, EXIT_SCANS_FAILED, EXIT_USAGE


def _batch(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli_main(["batch", *args, "--provider", "cpu", "--threads", "1"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("scans")
    return write_cohort(folder, 2) + [write_corrupt(folder / "bad.nii.gz")]


def test_batch_reports_counts_failures_and_exits_11(scans, tiny_unet_path, tmp_path, capsys):
    code, out, err = _batch([*map(str, scans), "--out", str(tmp_path / "o"), "--model", str(tiny_unet_path)], capsys)
    assert code == EXIT_SCANS_FAILED == 11
    assert "3 scans: 2 segmented, 0 reused from an earlier run, 1 failed" in out
    assert "engine local: 1 worker(s) x 1 thread(s); provider cpu, precision fp32" in out
    assert "limbseg-rt: error: 1 of 3 scans failed" in err and "  bad: exit 3: " in err
    assert "limbseg-rt: warning: scan bad failed (exit 3)" in err  # the log line (stderr is not a terminal)
    assert "batch: [" in err and "3/3 scans, 1 failed" in err
    assert "Traceback" not in err

    code, out, err = _batch(
        [*map(str, scans[:2]), "--out", str(tmp_path / "o"), "--model", str(tiny_unet_path)], capsys
    )
    assert code == EXIT_OK and "2 scans: 0 segmented, 2 reused" in out


def test_manifest_run_with_limb_ranges(scans, tiny_scunet_path, tmp_path, capsys):
    m = tmp_path / "cohort.csv"
    m.write_text(f"id,path,limb_range\nthigh,{scans[0]},0:0.5\nleg,{scans[1]},\n")
    code, out, err = _batch(
        ["--manifest", str(m), "--out", str(tmp_path / "o"), "--model", str(tiny_scunet_path), "--limb-range", "0.2:1"],
        capsys,
    )
    assert code == EXIT_OK, err
    rec = {i: json.loads((tmp_path / "o" / i / "completed.json").read_text()) for i in ("thigh", "leg")}
    assert rec["thigh"]["settings"]["limb_range"] == [0.0, 0.5]  # the manifest's own range
    assert rec["leg"]["settings"]["limb_range"] == [0.2, 1.0]  # the command line's default
    report = json.loads((tmp_path / "o" / "thigh" / "thigh_report.json").read_text())
    assert report["manifest"]["pipeline"]["limb_range"] == [0.0, 0.5]


@pytest.mark.parametrize(
    "extra, match, code",
    [
        (["--manifest", "m.csv"], "either INPUT paths or --manifest", EXIT_USAGE),
        (["--out", "{file}"], "is a file", EXIT_OUTPUT),
    ],
)
def test_command_line_errors_are_one_line(scans, tiny_unet_path, tmp_path, capsys, extra, match, code):
    afile = tmp_path / "file"
    afile.write_text("x")
    extra = [e.replace("{file}", str(afile)) for e in extra]
    args = [str(scans[0]), "--model", str(tiny_unet_path), *extra]
    if "--out" not in extra:
        args += ["--out", str(tmp_path / "o")]
    got, out, err = _batch(args, capsys)
    assert got == code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("limbseg-rt: error: ") and match in lines[0]


def test_a_missing_model_is_exit_4_before_any_scan(scans, tmp_path, capsys):
    code, out, err = _batch([str(scans[0]), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "x.onnx")], capsys)
    assert code == EXIT_MODEL
    assert err.strip().splitlines() == [f"limbseg-rt: error: model file not found: {tmp_path / 'x.onnx'}"]
    assert not (tmp_path / "o" / "s00").exists()


def test_ray_engine_without_ray_says_how_to_install(scans, tiny_unet_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as on a machine without it
    code, out, err = _batch(
        [str(scans[0]), "--out", str(tmp_path / "o"), "--model", str(tiny_unet_path), "--engine", "ray"], capsys
    )
    assert code == EXIT_DEPENDENCY
    assert (
        err.strip()
        == 'limbseg-rt: error: --engine ray needs Ray Data, which is not installed: pip install "limbseg-rt[cluster]"'
    )


def test_sigterm_leaves_only_complete_scans_and_a_rerun_finishes(tiny_unet_path, tmp_path):
    """SIGTERM to a running batch: exit 143 with one line, complete scan folders only (each loads and has
    its record), no staging folders or temporaries; the same command then finishes the rest."""
    paths = write_cohort(tmp_path / "in", 14, slices=40, shape=(96, 80), spacing=(2.0, 2.0, 5.0))
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("limbseg-rt")
    cmd = [
        str(exe),
        "batch",
        *map(str, paths),
        "--out",
        str(out),
        "--model",
        str(tiny_unet_path),
        "--provider",
        "cpu",
        "--threads",
        "1",
        "--workers",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until a few scans are done, then stop it mid-cohort
        done = [p for p in out.glob("s*") if p.is_dir()] if out.is_dir() else []
        if len(done) >= 3 or proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == EXIT_OK:
        pytest.skip("the batch finished before SIGTERM arrived (machine faster than expected)")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith("limbseg-rt: error: interrupted (SIGTERM) with ")
    assert "rerun the same command to finish" in err
    assert "Traceback" not in err
    assert hidden_entries(out) == []
    assert not (out / "summary.json").exists()
    complete = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert 1 <= len(complete) < len(paths)
    assert f"with {len(complete)} of {len(paths)} scans complete" in err
    for sid in complete:
        folder = out / sid
        rec = json.loads((folder / "completed.json").read_text())
        assert all((folder / name).is_file() for name in rec["outputs"].values())
        assert nib.load(str(folder / f"{sid}_labels.nii.gz")).get_fdata().shape == (96, 80, 40)
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == EXIT_OK, rerun.stderr
    assert f"{len(paths)} scans: {len(paths) - len(complete)} segmented, {len(complete)} reused" in rerun.stdout
    with open(out / "scans.csv", newline="") as fh:
        assert [r["status"] for r in csv.DictReader(fh)] == ["ok"] * len(paths)
    assert hidden_entries(out) == []


def test_a_killed_worker_fails_only_its_scans_and_is_replaced(tiny_unet_path, tmp_path):
    """SIGKILL (what the kernel's OOM killer sends) to one worker mid-cohort: the scans it held fail with
    a message naming the signal, a new worker takes over the rest, and a rerun completes the cohort."""
    psutil = pytest.importorskip("psutil")
    paths = write_cohort(tmp_path / "in", 14, slices=40, shape=(96, 80), spacing=(2.0, 2.0, 5.0))
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("limbseg-rt")
    cmd = [
        str(exe),
        "batch",
        *map(str, paths),
        "--out",
        str(out),
        "--model",
        str(tiny_unet_path),
        "--provider",
        "cpu",
        "--threads",
        "2",
        "--workers",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    victim = None
    while time.monotonic() < deadline and proc.poll() is None:
        done = [p for p in out.glob("s*") if p.is_dir()] if out.is_dir() else []
        try:
            workers = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        except psutil.Error:
            workers = []  # a child went away while being looked at
        if len(done) >= 1 and len(workers) == 2:
            victim = workers[0]
            victim.kill()
            break
        time.sleep(0.01)
    stdout, err = proc.communicate(timeout=180)
    if victim is None:
        pytest.skip("the batch finished before a worker could be killed")
    assert proc.returncode in (EXIT_OK, EXIT_SCANS_FAILED), err
    assert hidden_entries(out) == []
    with open(out / "scans.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(paths)
    failed = [r for r in rows if r["status"] == "failed"]
    assert all(r["exit_code"] == "1" and "killed by SIGKILL" in r["message"] for r in failed)
    assert (proc.returncode == EXIT_SCANS_FAILED) == bool(failed)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"]["worker_restarts"] == 1
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == EXIT_OK, rerun.stderr
    assert f"{len(failed)} segmented, {len(paths) - len(failed)} reused" in rerun.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_stops_a_ray_batch_cleanly(tiny_unet_path, tmp_path):
    """ray.init installs its own SIGTERM handler; the engine restores ours, so a Ray batch stops like a local one."""
    pytest.importorskip("ray.data")
    paths = write_cohort(tmp_path / "in", 10, slices=40, shape=(96, 80), spacing=(2.0, 2.0, 5.0))
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("limbseg-rt")
    cmd = [
        str(exe),
        "batch",
        *map(str, paths),
        "--out",
        str(out),
        "--model",
        str(tiny_unet_path),
        "--provider",
        "cpu",
        "--engine",
        "ray",
        "--workers",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and len([p for p in out.glob("s*") if p.is_dir()]) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == EXIT_OK:
        pytest.skip("the batch finished before SIGTERM arrived")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "limbseg-rt: error: interrupted (SIGTERM) with " in err
    assert hidden_entries(out) == []
    for folder in (p for p in out.iterdir() if p.is_dir()):
        rec = json.loads((folder / "completed.json").read_text())
        assert all((folder / name).is_file() for name in rec["outputs"].values())
