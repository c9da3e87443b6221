"""Evaluate one label pair in a fresh process and print one JSON line: wall time (s), peak RSS (MiB,
``VmHWM``: interpreter and libraries included) and the per-label DSC, HD, HD95, ASSD.

    python _eval_probe.py PRED.nii.gz REF.nii.gz ours     # limbseg-rt evaluate's library call
    python _eval_probe.py PRED.nii.gz REF.nii.gz medpy    # medpy.metric.binary, as a user calls it

``medpy``: for each label present in both maps, ``dc``, ``hd``, ``hd95`` and ``assd`` of the two
masks cropped to the label's bounding box in either map (its exact values: every surface voxel lies
in that box and medpy counts the outside of the array as background, as the box's outside is for
that label). Without the crop each call takes a distance transform of the whole volume: on
512 x 512 x 150 about 30 s per call on our 2 shared cores, two per call, four calls per label.
Both modes read the files with nibabel and time from before the read to the last metric.
"""

from __future__ import annotations

import json
import sys
import time

from limbseg_rt.runtime.report.run_report import peak_rss_mib


def _ours(pred_path: str, ref_path: str) -> dict:
    from limbseg_rt.runtime.model.labels import default_label_table
    from limbseg_rt.runtime.report.metrics import FLAG_OK, evaluate_files

    res = evaluate_files(pred_path, ref_path, labels=default_label_table())
    return {str(r.index): [r.dsc, r.hd_mm, r.hd95_mm, r.assd_mm] for r in res.rows if r.flag == FLAG_OK}


def _medpy(pred_path: str, ref_path: str) -> dict:
    import medpy.metric.binary as mb
    import nibabel as nib
    import numpy as np

    pred_img, ref_img = nib.load(pred_path), nib.load(ref_path)
    pred, ref = np.asarray(pred_img.dataobj), np.asarray(ref_img.dataobj)
    spacing = tuple(float(v) for v in np.linalg.norm(ref_img.affine[:3, :3], axis=0))
    out = {}
    for i in range(1, int(max(pred.max(), ref.max())) + 1):
        union = (pred == i) | (ref == i)
        if not ((pred == i).any() and (ref == i).any()):
            continue
        box = tuple(slice(int(h.min()), int(h.max()) + 1) for h in np.nonzero(union))
        a, b = pred[box] == i, ref[box] == i
        out[str(i)] = [mb.dc(a, b), mb.hd(a, b, spacing), mb.hd95(a, b, spacing), mb.assd(a, b, spacing)]
    return out


def main(argv: list[str]) -> int:
    pred_path, ref_path, mode = argv
    t0 = time.perf_counter()
    values = (_ours if mode == "ours" else _medpy)(pred_path, ref_path)
    wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "mode": mode,
                "wall_s": wall,
                "cpu_s": time.process_time(),
                "peak_rss_mib": peak_rss_mib(),
                "labels": values,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
