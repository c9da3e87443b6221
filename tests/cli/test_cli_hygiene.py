"""The CLI's error output is exactly one line, and --threads is bounded (issue 17, "Other")."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from limbseg_rt.cli import main as cli_main
from limbseg_rt.runtime.errors import EXIT_INPUT


def test_third_party_warnings_do_not_leak_around_the_error_line(tmp_path):
    """In a fresh interpreter (pytest would capture warnings and log records itself)."""
    script = textwrap.dedent("""
        import logging, sys, warnings
        import limbseg_rt.runtime.report.metrics as metrics
        from limbseg_rt.runtime.errors import InputError

        def noisy(*args, **kwargs):
            warnings.warn("overflow encountered in cast", RuntimeWarning, stacklevel=1)
            logging.getLogger("nibabel.nifti1").warning("vox offset 100 too low for single file nifti1")
            raise InputError("'p.nii.gz': is not a label map")

        metrics.evaluate_files = noisy
        from limbseg_rt.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    args = ["evaluate", str(tmp_path / "p.nii.gz"), str(tmp_path / "r.nii.gz")]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_INPUT
    assert done.stderr.splitlines() == ["limbseg-rt: error: 'p.nii.gz': is not a label map"], done.stderr
    debug = subprocess.run([sys.executable, "-c", script, *args, "--debug"], capture_output=True, text=True, timeout=60)
    assert "overflow encountered" in debug.stderr, "--debug shows everything"


def test_threads_are_bounded_by_the_cpus(capsys):
    cpus = len(os.sched_getaffinity(0))
    with pytest.raises(SystemExit) as exc:
        cli_main(["run", "scan.nii.gz", "--threads", str(4 * cpus + 1)])
    assert exc.value.code == 2
    assert f"use at most {4 * cpus}" in capsys.readouterr().err


def test_running_out_of_memory_is_exit_10_not_a_bug(tmp_path, capsys, monkeypatch):
    import limbseg_rt.runtime.report.metrics as metrics

    def hungry(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(metrics, "evaluate_files", hungry)
    rc = cli_main(["evaluate", str(tmp_path / "p.nii.gz"), str(tmp_path / "r.nii.gz")])
    lines = capsys.readouterr().err.splitlines()
    assert rc == 10 and len(lines) == 1 and "ran out of memory" in lines[0] and "internal error" not in lines[0]


def test_a_closed_output_pipe_is_not_an_error():
    import shlex
    import subprocess
    import sys

    cmd = f"{shlex.quote(sys.executable)} -m limbseg_rt info | head -n 1"
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, text=True, timeout=120)
    assert proc.stdout == "versions:\n"
    assert proc.stderr == ""  # no "internal error (BrokenPipeError)"
    # 128 + SIGPIPE when the pipe closed before we finished writing (as a shell tool ends), else 0
    assert proc.returncode in (0, 141)
