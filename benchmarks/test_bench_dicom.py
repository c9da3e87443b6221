"""DICOM: reading a 300-slice series against pydicom's bare ``dcmread`` of the same files, and SEG writing.

- quick: 300 slices of 256 x 256; full: 300 slices of 512 x 512 (a real series size). ``read_dicom`` (discovery,
  grouping, geometry checks, pixel decoding, rescale, canonical float32 volume) against
  ``[pydicom.dcmread(f) for f in files]`` (parsing only, pixel bytes read but not decoded), best
  of 4 each, interleaved, in a fresh interpreter (the long session's allocator state favoured one
  side); gate: ratio <= 1.5.
- The time to write the SEG of the phantom's true labels (highdicom BINARY) is reported, not gated.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from _harness import gate_at_most

pydicom = pytest.importorskip("pydicom", reason='needs the dicom extra: pip install -e ".[dicom]"')
pytest.importorskip("highdicom")

READ_RATIO_MAX = 1.5
SLICES = 300


@pytest.fixture(scope="module")
def series(tmp_path_factory, full_run):
    from limbseg_rt.runtime.io.dicom.write_series import write_mr_series
    from limbseg_rt.runtime.phantom.generate import make_phantom

    shape = (512, 512) if full_run else (256, 256)
    image, labels = make_phantom(21, slices=SLICES, shape=shape)
    folder = tmp_path_factory.mktemp("dicom300")
    files = write_mr_series(np.asarray(image.dataobj), image.affine, folder, names="random")
    return folder, files, np.asarray(labels.dataobj)


_READ_TIMES = """
import json, sys, time
from pathlib import Path
import pydicom
from limbseg_rt.runtime.io.dicom import read_dicom
folder = Path(sys.argv[1])
files = sorted(p for p in folder.rglob("*") if p.is_file())
bare, ours = [], []
for _ in range(REPS):  # interleaved, so a busy moment hits both sides
    t0 = time.perf_counter(); [pydicom.dcmread(f) for f in files]; bare.append(time.perf_counter() - t0)
    t0 = time.perf_counter(); read_dicom(folder); ours.append(time.perf_counter() - t0)
print(json.dumps([min(bare), min(ours)]))
"""


def _read_times_in_a_fresh_process(folder, reps: int = 4) -> tuple[float, float]:
    """Best of ``reps`` interleaved rounds of bare ``dcmread`` and ``read_dicom``, in a new interpreter:
    in the long benchmark session the bare parse (many small objects) ran 30 % faster than alone
    (0.115 vs 0.165 s, warm allocator arenas) while ``read_dicom`` (one 300 MB volume) did not, so the
    session's history decided the ratio (1.64 in the full run, 1.16 alone)."""
    import json
    import subprocess
    import sys

    code = _READ_TIMES.replace("REPS", str(reps))
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    bare, ours = json.loads(out.stdout.strip().splitlines()[-1])
    return bare, ours


def test_read_300_slices_vs_bare_dcmread(series, tmp_path, full_run):
    from limbseg_rt.runtime.io.dicom import read_dicom
    from limbseg_rt.runtime.io.dicom.seg import AlgorithmInfo, write_seg
    from limbseg_rt.runtime.model.labels import default_label_table

    folder, files, truth = series
    bare_s, ours_s = _read_times_in_a_fresh_process(folder)
    ratio = ours_s / bare_s
    _, props, _ = read_dicom(folder)
    t0 = time.perf_counter()
    write_seg(
        truth.astype(np.uint8),
        props,
        tmp_path / "seg.dcm",
        table=default_label_table(),
        algorithm=AlgorithmInfo("limbseg-rt bench", "0", "0" * 64),
    )
    seg_s = time.perf_counter() - t0
    print(
        f"\nDICOM {SLICES} slices {truth.shape[0]}x{truth.shape[1]}: read_dicom {ours_s:.3f} s, bare dcmread "
        f"{bare_s:.3f} s, ratio {ratio:.2f} (gate <= {READ_RATIO_MAX}, full run only); SEG write {seg_s:.2f} s"
    )
    assert (tmp_path / "seg.dcm").is_file()
    if full_run:
        gate_at_most("read_dicom / bare dcmread (300 slices of 512 x 512)", ratio, READ_RATIO_MAX)
