"""Fault injection on the CLI's outputs (issue 17): nothing lost, nothing clobbered.

Every test runs the real command (in a subprocess where a fault must hit the process itself:
``RLIMIT_FSIZE``, signals) and asserts the exit code, the single error line, the exact set of files
left in the output folder, the previous outputs' bytes and the input's hash.

Root-only cases (a character device made with ``os.mknod``, a tmpfs mounted at a test folder for
disk-full and read-only) skip with the reason elsewhere.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.cli import main as cli_main
from limbseg_rt.runtime import errors
from limbseg_rt.runtime.errors import EXIT_OUTPUT

SHAPE = (64, 56)
SLICES = 12
OK_CODES = (0, 6)  # a tiny untrained model may find nothing: exit 6 still writes the whole set


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, str]:
    """{name: sha256} of every entry in ``folder`` (temporaries included: they start with a dot)."""
    return {p.name: (_sha(p) if p.is_file() else "<not a file>") for p in sorted(Path(folder).iterdir())}


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    from limbseg_rt.runtime.phantom.generate import make_phantom

    image, _ = make_phantom(5, slices=SLICES, shape=SHAPE, spacing=(2.0, 2.0, 6.0))
    path = tmp_path_factory.mktemp("input") / "leg.nii.gz"
    nib.save(image, str(path))
    return path


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "limbseg_rt", *args]


def _run_args(scan: Path, model: Path, out_dir: Path) -> list[str]:
    return [
        "run",
        str(scan),
        "--model",
        str(model),
        "--provider",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(out_dir / "leg_labels.nii.gz"),
        "--report",
        str(out_dir / "leg_report.json"),
        "--csv",
        str(out_dir / "leg_volumes.csv"),
    ]


def _proc(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(*args), capture_output=True, text=True, timeout=240, **kwargs)


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert lines[0].startswith("limbseg-rt: error: ")
    return lines[0]


EXPECTED_SET = ["leg_labels.ctbl", "leg_labels.itksnap.txt", "leg_labels.nii.gz", "leg_report.json", "leg_volumes.csv"]


@pytest.fixture
def previous_set(scan, tiny_unet_path, tmp_path):
    """An output folder holding a complete earlier run; returns (folder, {name: sha256})."""
    out = tmp_path / "out"
    out.mkdir()
    done = _proc(_run_args(scan, tiny_unet_path, out))
    assert done.returncode in OK_CODES, done.stderr
    snap = _snapshot(out)
    assert sorted(snap) == EXPECTED_SET
    return out, snap


# -- clobbering --------------------------------------------------------------------------------


def _label_map(path: Path, value: int) -> Path:
    data = np.zeros((8, 8, 4), np.uint8)
    data[2:6, 2:6, 1:3] = value
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


@pytest.mark.parametrize("option, victim", [("--json", "pred"), ("--csv", "ref"), ("--json", "ref")])
def test_evaluate_never_writes_over_its_inputs(tmp_path, capsys, option, victim):
    files = {"pred": _label_map(tmp_path / "p.nii.gz", 1), "ref": _label_map(tmp_path / "r.nii.gz", 1)}
    before = {k: _sha(p) for k, p in files.items()}
    rc = cli_main(["evaluate", str(files["pred"]), str(files["ref"]), option, str(files[victim])])
    line = _one_line(capsys.readouterr().err)
    assert rc == EXIT_OUTPUT and "would overwrite the input" in line
    assert {k: _sha(p) for k, p in files.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.nii.gz", "r.nii.gz"]


def test_evaluate_refuses_the_label_table_as_output(tmp_path, capsys):
    from limbseg_rt.runtime.model.labels import default_label_table

    table = tmp_path / "table.json"
    table.write_text(default_label_table().to_json())
    before = _sha(table)
    p, r = _label_map(tmp_path / "p.nii.gz", 1), _label_map(tmp_path / "r.nii.gz", 1)
    rc = cli_main(["evaluate", str(p), str(r), "--labels", str(table), "--csv", str(table)])
    assert rc == EXIT_OUTPUT and "would overwrite the input" in _one_line(capsys.readouterr().err)
    assert _sha(table) == before


def test_evaluate_outputs_follow_the_umask(tmp_path, capsys):
    p, r = _label_map(tmp_path / "p.nii.gz", 1), _label_map(tmp_path / "r.nii.gz", 1)
    old = os.umask(0o022)
    try:
        assert (
            cli_main(["evaluate", str(p), str(r), "--json", str(tmp_path / "m.json"), "--csv", str(tmp_path / "m.csv")])
            == 0
        )
    finally:
        os.umask(old)
    capsys.readouterr()
    for name in ("m.json", "m.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
    assert json.loads((tmp_path / "m.json").read_text())


# -- a rerun that fails while writing ----------------------------------------------------------


def test_rerun_failing_at_write_with_rlimit_fsize_keeps_the_previous_set(scan, tiny_unet_path, previous_set):
    out, before = previous_set
    limit = 2048  # smaller than the report, so some write of the set must fail with EFBIG

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = _proc(_run_args(scan, tiny_unet_path, out), preexec_fn=small_files)
    assert done.returncode == EXIT_OUTPUT, (done.returncode, done.stderr)  # not killed by SIGXFSZ
    line = _one_line(done.stderr)
    assert "file too large" in line and "ulimit -f" in line
    assert _snapshot(out) == before, "the previous outputs must be byte-identical and no temporaries left"


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_signal_during_the_write_leaves_the_previous_set_and_no_temporaries(
    scan, tiny_unet_path, previous_set, signame, code
):
    """The signal is sent by the process itself right after the label file's temporary was written."""
    out, before = previous_set
    script = textwrap.dedent(f"""
        import os, signal, sys
        import nibabel.filebasedimages as fbi

        real = fbi.FileBasedImage.to_filename

        def to_filename(self, filename, **kwargs):
            real(self, filename, **kwargs)
            os.kill(os.getpid(), signal.{signame})

        fbi.FileBasedImage.to_filename = to_filename
        from limbseg_rt.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script, *_run_args(scan, tiny_unet_path, out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == code, (done.returncode, done.stderr)
    assert f"interrupted ({signame})" in _one_line(done.stderr)
    assert _snapshot(out) == before


def test_a_killed_run_leaves_temporaries_that_the_next_run_removes(scan, tiny_unet_path, previous_set):
    out, before = previous_set
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".limbseg-{dead.pid}-0123abcd.tmp.nii.gz"
    stale.write_bytes(b"half a label file")
    live = out / f".limbseg-{os.getpid()}-0123abcd.tmp"  # this test process is alive: kept
    live.write_bytes(b"someone else's work")
    other = out / ".leg_labels.0123456789ab.tmp.nii.gz"  # not our naming: never touched
    other.write_bytes(b"not ours")
    done = _proc(_run_args(scan, tiny_unet_path, out))
    assert done.returncode in OK_CODES, done.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*EXPECTED_SET, live.name, other.name])


# -- non-regular targets -----------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="os.mknod of a character device needs root")
def test_report_to_a_character_device_is_written_in_place(scan, tiny_unet_path, tmp_path):
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # the same device as /dev/null
    try:
        with open(dev, "w") as fh:
            fh.write("probe")
    except OSError as exc:
        pytest.skip(f"{tmp_path} does not allow device nodes ({exc.strerror})")
    args = [
        "run",
        str(scan),
        "--model",
        str(tiny_unet_path),
        "--provider",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(tmp_path / "leg_labels.nii.gz"),
        "--report",
        str(dev),
        "--csv",
        str(dev),
    ]
    done = _proc(args)
    assert done.returncode in OK_CODES, done.stderr
    assert stat.S_ISCHR(dev.stat().st_mode) and dev.stat().st_rdev == os.makedev(1, 3), "the device node was replaced"
    assert (tmp_path / "leg_labels.nii.gz").is_file()


def test_csv_to_a_fifo_is_written_in_place_when_someone_reads(scan, tiny_unet_path, tmp_path):
    fifo = tmp_path / "volumes.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def reader():
        with open(fifo, "rb") as fh:  # blocks until the writer opens
            while chunk := fh.read(65536):
                got.append(chunk)

    # The check opens the FIFO once (non-blocking) to see a reader; keep one reading until the end.
    holder = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        args = [
            "run",
            str(scan),
            "--model",
            str(tiny_unet_path),
            "--provider",
            "cpu",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "leg_labels.nii.gz"),
            "--report",
            str(tmp_path / "r.json"),
            "--csv",
            str(fifo),
        ]
        done = _proc(args)
    finally:
        os.close(holder)
    t.join(timeout=30)
    assert done.returncode in OK_CODES, done.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert b"".join(got).startswith(b"index,code,name,volume_ml")


def test_a_fifo_without_a_reader_is_refused_before_any_work(scan, tiny_unet_path, tmp_path, capsys):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    rc = cli_main(
        [
            "run",
            str(scan),
            "--model",
            str(tiny_unet_path),
            "--provider",
            "cpu",
            "--out",
            str(tmp_path / "leg_labels.nii.gz"),
            "--report",
            str(fifo),
            "--csv",
            str(tmp_path / "v.csv"),
        ]
    )
    assert rc == EXIT_OUTPUT and "named pipe with no reader" in _one_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.fifo"]


# -- names -------------------------------------------------------------------------------------


def test_a_legal_long_name_is_written_and_an_illegal_one_refused(scan, tiny_unet_path, tmp_path, capsys):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    legal = "x" * (name_max - len("_labels.nii.gz") - 5) + "_labels.nii.gz"  # its side files still fit
    args = [
        "run",
        str(scan),
        "--model",
        str(tiny_unet_path),
        "--provider",
        "cpu",
        "--threads",
        "1",
        "--report",
        str(tmp_path / "r.json"),
        "--csv",
        str(tmp_path / "v.csv"),
    ]
    rc = cli_main([*args, "--out", str(tmp_path / legal)])
    capsys.readouterr()
    assert rc in OK_CODES and (tmp_path / legal).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    before = _snapshot(tmp_path)
    too_long = "y" * (name_max + 1) + ".nii.gz"
    rc = cli_main([*args, "--out", str(tmp_path / too_long)])
    assert rc == EXIT_OUTPUT and "name is longer than this file system allows" in _one_line(capsys.readouterr().err)
    assert _snapshot(tmp_path) == before


def test_a_newline_in_a_path_does_not_cut_the_message(tmp_path, capsys):
    folder = tmp_path / "bad\nname"
    p, r = _label_map(tmp_path / "p.nii.gz", 1), _label_map(tmp_path / "r.nii.gz", 1)
    rc = cli_main(["evaluate", str(p), str(r), "--json", str(folder / "m.json")])
    assert rc == EXIT_OUTPUT
    assert "bad\\nname" in _one_line(capsys.readouterr().err)


# -- disk full and read-only file systems (a tmpfs mounted in the test folder) ----------------


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs at ``tmp_path/fs`` (root with mount rights only); unmounted afterwards."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as fh:
        for size in (65536, 1):  # then the last partial block too
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC


def test_disk_full_on_rerun_keeps_the_previous_set(scan, tiny_unet_path, small_fs):
    out = small_fs / "out"
    out.mkdir()
    first = _proc(_run_args(scan, tiny_unet_path, out))
    assert first.returncode in OK_CODES, first.stderr
    before = _snapshot(out)
    _fill(small_fs)
    src = _sha(scan)
    done = _proc(_run_args(scan, tiny_unet_path, out))
    assert done.returncode == EXIT_OUTPUT, done.stderr
    assert "no space left" in _one_line(done.stderr)
    assert _snapshot(out) == before
    assert _sha(scan) == src


def test_read_only_file_system_is_refused_before_the_work_and_keeps_the_set(scan, tiny_unet_path, small_fs):
    out = small_fs / "out"
    out.mkdir()
    first = _proc(_run_args(scan, tiny_unet_path, out))
    assert first.returncode in OK_CODES, first.stderr
    before = _snapshot(out)
    ro = subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], capture_output=True, text=True)
    if ro.returncode != 0:
        pytest.skip(f"cannot remount read-only: {ro.stderr.strip()}")
    done = _proc(_run_args(scan, tiny_unet_path, out))
    assert done.returncode == EXIT_OUTPUT, done.stderr
    assert "read-only file system" in _one_line(done.stderr)
    assert "segmenting" not in done.stderr  # refused before the segmentation started
    assert _snapshot(out) == before


# -- a missing optional dependency -------------------------------------------------------------


def test_train_without_torch_is_one_line_and_exit_12(tmp_path):
    script = textwrap.dedent("""
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoTorch())
        from limbseg_rt.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "train",
            "--arch",
            "unet",
            "--data",
            "phantom",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "u.pth.tar"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == getattr(errors, "EXIT_DEPENDENCY", 12), done.stderr
    line = _one_line(done.stderr)
    assert "'torch'" in line and 'pip install "limbseg-rt[export]"' in line
    assert list(tmp_path.iterdir()) == []


def test_sigxfsz_is_not_fatal_in_the_cli():
    """Documented in docs/outputs.md: the CLI ignores SIGXFSZ so a file size limit gives EFBIG and a message."""
    from limbseg_rt.cli import install_signal_handlers, restore_signal_handlers

    previous = install_signal_handlers()
    try:
        assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
    finally:
        restore_signal_handlers(previous)
    assert signal.getsignal(signal.SIGXFSZ) == previous[signal.SIGXFSZ]


def test_qc_files_are_part_of_the_set_and_a_failed_rerun_keeps_them(scan, tiny_unet_path, tmp_path):
    pytest.importorskip("PIL", reason="QC overlays need Pillow (the qc extra)")
    out = tmp_path / "out"
    out.mkdir()
    args = [*_run_args(scan, tiny_unet_path, out), "--qc"]
    first = _proc(args)
    assert first.returncode in OK_CODES, first.stderr
    before = _snapshot(out)
    assert "leg_report.html" in before and any(n.startswith("leg_qc_") for n in before)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    done = _proc(args, preexec_fn=small_files)
    assert done.returncode == EXIT_OUTPUT, done.stderr
    assert "file too large" in _one_line(done.stderr)
    assert _snapshot(out) == before


def test_sighup_to_a_batch_is_an_interrupt_with_exit_129(tiny_unet_path, tmp_path):
    """Like SIGTERM (tests/cli/test_batch_cli.py): complete scan folders only, the documented code."""
    import time

    from cohort_helpers import hidden_entries, write_cohort

    paths = write_cohort(tmp_path / "in", 10, slices=40, shape=(96, 80), spacing=(2.0, 2.0, 5.0))
    out = tmp_path / "out"
    cmd = _cmd(
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
    )
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (
            out.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in out.iterdir())
        ) or proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the batch finished before SIGHUP arrived")
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert "interrupted (SIGHUP)" in err.strip().splitlines()[-1]
    assert hidden_entries(out) == []
