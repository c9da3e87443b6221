"""The measurement behind docs/metrics.md "Which distance transform": the three ways to get every
label's surface distances on one pair, timed one after the other in this process, values compared.

    python benchmarks/_distance_choice.py PRED.nii.gz REF.nii.gz

- ``numpy``: the hand-written separable transform limbseg-rt used until this change, read from git
  (commit ``dfa0bc0``, ``runtime/report/distance.py``), on the same surface voxels;
- ``ndimage``: ``scipy.ndimage.distance_transform_edt`` of each surface inside the label's bounding
  box in either map (exact: every surface voxel lies in that box), as medpy does on the whole volume;
- ``kdtree``: ``scipy.spatial.cKDTree`` nearest-neighbour queries between the surface voxels, in mm
  (what ``runtime/report/distance.py`` does now).

Surfaces are found once (one pass per map) and are not part of the timings; each method runs once on
the first label before the timed pass (imports, first-call costs). Prints wall and CPU
seconds per method and the largest difference of HD, HD95 and ASSD from the ``kdtree`` values (mm).
"""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import nibabel as nib
import numpy as np

from limbseg_rt.runtime.report.distance import label_surfaces, nearest_distances, surface

FORMER = "dfa0bc0"


def _former_module():
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(
        ["git", "-C", str(root), "show", f"{FORMER}:runtime/report/distance.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    mod = types.ModuleType("former_distance")
    exec(compile(src, "former_distance.py", "exec"), mod.__dict__)
    return mod


def _summary(d1, d2):
    pooled = np.concatenate([d1, d2])
    return pooled.max(), np.percentile(pooled, 95), pooled.mean()


def main(pred_path: str, ref_path: str) -> None:
    from scipy import ndimage

    ref_img = nib.load(ref_path)
    # C-ordered views (nibabel's arrays are Fortran-ordered), spacing reversed to match.
    pred = np.asarray(nib.load(pred_path).dataobj).T
    ref = np.asarray(ref_img.dataobj).T
    sp = tuple(float(v) for v in np.linalg.norm(ref_img.affine[:3, :3], axis=0))[::-1]
    surf_p, surf_r = label_surfaces(pred), label_surfaces(ref)
    ids = [i for i in surf_p if i and i in surf_r]
    former = _former_module()

    def numpy_way(i):
        return former.nearest_distances(surf_r[i], surf_p[i], sp), former.nearest_distances(surf_p[i], surf_r[i], sp)

    def ndimage_way(i):
        both = np.concatenate([surf_p[i], surf_r[i]])
        box = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(both.min(0), both.max(0)))
        sa, sb = surface(pred[box] == i), surface(ref[box] == i)
        return (
            ndimage.distance_transform_edt(~sb, sampling=sp)[sa],
            ndimage.distance_transform_edt(~sa, sampling=sp)[sb],
        )

    def kdtree_way(i):
        return nearest_distances(surf_r[i], surf_p[i], sp), nearest_distances(surf_p[i], surf_r[i], sp)

    values, seconds, cpu = {}, {}, {}
    for fn in (kdtree_way, ndimage_way, numpy_way):  # warm-up: imports, first-call costs
        fn(ids[0])
    for name, fn in (("kdtree", kdtree_way), ("ndimage", ndimage_way), ("numpy", numpy_way)):
        t0, c0 = time.perf_counter(), time.process_time()
        values[name] = np.array([_summary(*fn(i)) for i in ids])
        seconds[name], cpu[name] = time.perf_counter() - t0, time.process_time() - c0
    for name in seconds:
        diff = float(np.max(np.abs(values[name] - values["kdtree"])))
        print(
            f"{name:8s} {seconds[name]:7.2f} s wall {cpu[name]:7.2f} s CPU  {len(ids)} labels  max |difference| vs kdtree {diff:.2e} mm"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
