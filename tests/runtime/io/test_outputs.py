"""``OutputSet`` (runtime/io/outputs.py): checked once, written to temporaries, published together."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from limbseg_rt.runtime.errors import OutputError
from limbseg_rt.runtime.io import outputs
from limbseg_rt.runtime.io.outputs import OutputSet, nifti_stem, remove_stale_temporaries


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_files_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o027)
    try:
        with OutputSet() as out:
            out.add("a", tmp_path / "a.json")
            out.add("b", tmp_path / "b.nii.gz")
            out.check()
            out.write_text("a", "{}")
            out.write_bytes("b", b"x")
            out.commit()
    finally:
        os.umask(old)
    for name in ("a.json", "b.nii.gz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640


def test_nothing_is_published_until_commit_and_a_failure_keeps_the_previous_set(tmp_path):
    (tmp_path / "labels.nii.gz").write_bytes(b"old labels")
    (tmp_path / "report.json").write_text("old report")
    with pytest.raises(RuntimeError):
        with OutputSet() as out:
            out.add("labels", tmp_path / "labels.nii.gz")
            out.add("report", tmp_path / "report.json")
            out.check()
            out.write_bytes("labels", b"new labels")
            assert (tmp_path / "labels.nii.gz").read_bytes() == b"old labels"  # not yet published
            raise RuntimeError("the report could not be made")
    assert (tmp_path / "labels.nii.gz").read_bytes() == b"old labels"
    assert (tmp_path / "report.json").read_text() == "old report"
    assert _names(tmp_path) == ["labels.nii.gz", "report.json"], "temporaries removed"


def test_keyboard_interrupt_discards_the_temporaries(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with OutputSet() as out:
            out.add("a", tmp_path / "a.txt")
            out.write_text("a", "partial")
            raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_commit_publishes_in_declaration_order(tmp_path, monkeypatch):
    order = []
    real = os.replace
    monkeypatch.setattr(outputs.os, "replace", lambda a, b: (order.append(Path(b).name), real(a, b)))
    with OutputSet() as out:
        for name in ("labels.nii.gz", "volumes.csv", "report.json"):
            out.add(name, tmp_path / name)
        for name in ("report.json", "labels.nii.gz", "volumes.csv"):  # written in any order
            out.write_text(name, name)
        written = out.commit()
    assert order == ["labels.nii.gz", "volumes.csv", "report.json"]
    assert list(written) == order


def test_temporaries_sit_beside_the_target_with_its_format_suffix_and_a_fixed_length(tmp_path):
    long = "z" * 240 + ".nii.gz"
    with OutputSet() as out:
        out.add("a", tmp_path / long)
        tmp = out.temp("a")
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp.nii.gz")
        assert tmp.name.startswith(f".limbseg-{os.getpid()}-") and len(tmp.name) < 40
    assert _names(tmp_path) == []


def test_inputs_are_never_targets(tmp_path):
    src = tmp_path / "scan.nii.gz"
    src.write_bytes(b"scan")
    hard = tmp_path / "hard.nii.gz"
    os.link(src, hard)
    soft = tmp_path / "soft.nii.gz"
    soft.symlink_to(src)
    for target in (src, tmp_path / "." / "scan.nii.gz", hard, soft):
        with pytest.raises(OutputError, match="would overwrite the input"):
            OutputSet(inputs=[src]).add("labels", target)
    assert src.read_bytes() == b"scan"


def test_unusable_targets(tmp_path):
    out = OutputSet()
    with pytest.raises(OutputError, match="is a folder"):
        out.add("a", tmp_path)
    with pytest.raises(OutputError, match="output folder does not exist"):
        out.add("a", tmp_path / "missing" / "x.json")
    with pytest.raises(OutputError, match="name is longer"):
        out.add("a", tmp_path / ("n" * 300))
    out.add("a", tmp_path / "x.json")
    with pytest.raises(OutputError, match="same file"):
        out.add("b", tmp_path / "x.json")


@pytest.mark.skipif(os.geteuid() != 0, reason="os.mknod of a block device needs root")
def test_a_block_device_is_refused(tmp_path):
    dev = tmp_path / "disk"
    os.mknod(dev, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    with pytest.raises(OutputError, match="not a regular file"):
        OutputSet().add("a", dev)
    assert stat.S_ISBLK(dev.stat().st_mode)


def test_check_probes_the_folder(tmp_path, monkeypatch):
    """A read-only file system seen as EROFS at the OS boundary (the tmpfs test in tests/cli does it for real)."""
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(outputs.os, "open", read_only)
    out = OutputSet()
    out.add("a", tmp_path / "x.json", what="report")
    with pytest.raises(OutputError, match="report .* read-only file system"):
        out.check()


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".limbseg-{dead.pid}-deadbeef.tmp.nii.gz"
    alive = tmp_path / f".limbseg-{os.getppid()}-deadbeef.tmp"
    foreign = tmp_path / ".limbseg-notapid.tmp"
    for p in (stale, alive, foreign):
        p.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert _names(tmp_path) == sorted([alive.name, foreign.name])


def test_a_character_device_is_written_in_place(tmp_path):
    out = OutputSet()
    out.add("a", "/dev/null")
    out.add("b", "/dev/null")  # several outputs may go to the null device
    out.check()
    out.write_text("a", "x")
    out.write_text("b", "y")
    assert out.commit() == {"a": Path("/dev/null"), "b": Path("/dev/null")}
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_nifti_stem():
    assert nifti_stem("case.nii.gz") == "case"
    assert nifti_stem("case.NII") == "case"
    assert nifti_stem("case.gz") == "case"
    assert nifti_stem("case.gz", (".nii.gz", ".nii")) == "case.gz"
    assert nifti_stem("case.json") == "case.json"
