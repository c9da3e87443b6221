"""QC pictures and page: their cost as a share of the run that made them, measured in the same process.

- quick: a 256 x 256 x 40 phantom; the share is reported (no gate: on a small scan the fixed cost of
  drawing seven pictures is a larger share than on a real one).
- full (slow): a 512 x 512 x 300 phantom; gate: QC time <= 10 % of the ``run`` time (``segment_file``
  with the model already loaded: read, segment, write labels and reports). QC gets the intensities
  in memory, as ``run --qc`` does (``segment(..., keep_image=True)``); reading the scan again took
  more than half of the QC time (1.3 of 2.2 s on Zen 5).

Both sides are timed one after the other on the same file, with the bundled UNet int8 on CPU.
"""

from __future__ import annotations

import time

import nibabel as nib
import pytest
from _harness import gate_at_most

pytest.importorskip("PIL", reason='QC pictures need Pillow (pip install "limbseg-rt[qc]")')

QC_SHARE_MAX = 0.10
QUICK = ((256, 256), 40)
FULL = ((512, 512), 300)


def _measure(tmp_path, shape, slices) -> tuple[float, float]:
    from limbseg_rt.runtime.api import Segmenter, segment_file
    from limbseg_rt.runtime.phantom.generate import make_phantom
    from limbseg_rt.runtime.qc.write import write_qc_for_result

    image, _ = make_phantom(21, slices=slices, shape=shape, spacing=(0.8, 0.8, 3.0))
    scan = tmp_path / "scan.nii.gz"
    nib.save(image, str(scan))
    del image
    with Segmenter("unet", provider="cpu", precision="int8") as seg:
        t0 = time.perf_counter()
        result, written = segment_file(scan, segmenter=seg)
        run = time.perf_counter() - t0
        # as `run --qc` does: the intensities stay in memory for the pictures (not read again)
        result.image_canonical = seg.segment(scan, keep_image=True).image_canonical
        t1 = time.perf_counter()
        qc = write_qc_for_result(result, scan, written["labels"])
        qc_s = time.perf_counter() - t1
    assert qc["html"].is_file()
    return run, qc_s


@pytest.mark.parametrize("size", ["quick", "full"])
def test_qc_cost_share_of_the_run(results, full_run, tmp_path, size):
    if size == "full" and not full_run:
        pytest.skip("512 x 512 x 300 QC cost: run with --full")
    (shape, slices) = FULL if size == "full" else QUICK
    run, qc = _measure(tmp_path, shape, slices)
    share = qc / run
    what = f"QC pictures + page / run time ({shape[0]}x{shape[1]}x{slices}, cpu int8)"
    results.runs.append(
        {
            "what": what,
            "engine": "cpu int8 (bundled UNet)",
            "slices": slices,
            "wall_s": run,
            "model_s": None,
            "ratio": share,
            "stages": {"qc_s": qc},
        }
    )
    if size != "full":
        results.gate(f"qc: {what}", share, "reported only (gated in --full)", True, f"qc {qc:.2f}s, run {run:.2f}s")
    else:
        results.gate(f"qc: {what}", share, f"<= {QC_SHARE_MAX}", share <= QC_SHARE_MAX, f"qc {qc:.2f}s, run {run:.2f}s")
        gate_at_most(f"qc: {what}", share, QC_SHARE_MAX, detail=f"qc {qc:.2f}s vs run {run:.2f}s")
