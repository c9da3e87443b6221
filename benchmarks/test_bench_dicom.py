"""DICOM: reading a 300-slice series against pydicom's bare ``dcmread`` of the same files, and SEG writing.

- quick: 300 slices of 256 x 256; full: 300 slices of 512 x 512 (a real series size). ``read_dicom`` (discovery,
  grouping, geometry checks, pixel decoding, rescale, canonical float32 volume) against
  ``[pydicom.dcmread(f) for f in files]`` (parsing only, pixel bytes read but not decoded), best
  of 3 each, interleaved; gate: ratio <= 1.5.
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


def _best(fn, reps: int = 3) -> float:
    return min(_timed(fn) for _ in range(reps))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_read_300_slices_vs_bare_dcmread(series, tmp_path, full_run):
    from limbseg_rt.runtime.io.dicom import read_dicom
    from limbseg_rt.runtime.io.dicom.seg import AlgorithmInfo, write_seg
    from limbseg_rt.runtime.model.labels import default_label_table

    folder, files, truth = series
    bare, ours = [], []
    for _ in range(3):  # interleaved, so a busy moment hits both sides
        bare.append(_timed(lambda: [pydicom.dcmread(f) for f in files]))
        ours.append(_timed(lambda: read_dicom(folder)))
    ratio = min(ours) / min(bare)
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
        f"\nDICOM {SLICES} slices {truth.shape[0]}x{truth.shape[1]}: read_dicom {min(ours):.3f} s, bare dcmread "
        f"{min(bare):.3f} s, ratio {ratio:.2f} (gate <= {READ_RATIO_MAX}, full run only); SEG write {seg_s:.2f} s"
    )
    assert (tmp_path / "seg.dcm").is_file()
    if full_run:
        gate_at_most("read_dicom / bare dcmread (300 slices of 512 x 512)", ratio, READ_RATIO_MAX)
