"""A reference/prediction label pair for timing ``limbseg-rt evaluate`` (numpy + nibabel only).

The reference is the phantom's ground truth; the prediction is what a reasonable network gives:
every label shifted by one voxel along x (a registration-size error), odd labels eroded once and
labels divisible by four dilated once into background (face-connected), one small muscle missed,
and a false-positive island far from its muscle. 37 labels, anisotropic voxels.

    python benchmarks/_eval_pair.py DIR [--shape 512 512] [--slices 150] [--seed 3]

writes ``DIR/ref.nii.gz`` and ``DIR/pred.nii.gz`` (uint8, same affine).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# Full-size pair of the issue: 512 x 512 x 150 voxels of 0.875 x 0.875 x 5 mm (a 448 mm FOV).
FULL_SHAPE, FULL_SLICES = (512, 512), 150
QUICK_SHAPE, QUICK_SLICES = (128, 128), 40
FOV_MM, SLICE_MM = 448.0, 5.0


def _face_neighbours_any(mask: np.ndarray) -> np.ndarray:
    """True where a face neighbour (6-connectivity, outside = False) of a voxel is True."""
    out = np.zeros_like(mask)
    for axis in range(mask.ndim):
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        out[tuple(lo)] |= mask[tuple(hi)]
        out[tuple(hi)] |= mask[tuple(lo)]
    return out


def perturb(ref: np.ndarray, seed: int = 0) -> np.ndarray:
    """A plausible prediction (uint8, same shape) made from the reference labels ``ref`` (uint8 [X, Y, Z])."""
    rng = np.random.default_rng(seed)
    pred = np.zeros_like(ref)
    pred[1:] = ref[:-1]  # one voxel along x
    present = [int(i) for i in np.unique(pred) if i]
    counts = np.bincount(pred.ravel(), minlength=256)
    for i in present:
        m = pred == i
        if i % 2:  # erode: drop surface voxels (face neighbour of another label or outside)
            pred[m & _face_neighbours_any(~m)] = 0
        elif i % 4 == 0:  # dilate into background only
            pred[_face_neighbours_any(m) & (pred == 0)] = i
    smallest = min(present, key=lambda i: counts[i])
    pred[pred == smallest] = 0  # a missed muscle
    # A false-positive island of the largest muscle, away from it: a small block at a random slice.
    largest = max(present, key=lambda i: counts[i])
    x, y, z = ref.shape
    zc = int(rng.integers(0, z))
    pred[x // 10 : x // 10 + max(2, x // 50), y // 10 : y // 10 + max(2, y // 50), zc] = largest
    return pred


def make_pair(shape=FULL_SHAPE, slices=FULL_SLICES, seed: int = 3):
    """``(pred, ref, spacing_mm)``: uint8 [X, Y, Z] label maps and the voxel size (x, y, z) in mm."""
    from limbseg_rt.runtime.phantom.generate import phantom_arrays

    spacing = (FOV_MM / shape[0], FOV_MM / shape[1], SLICE_MM)
    ph = phantom_arrays(seed, slices=slices, shape=tuple(shape), spacing=spacing)
    ref = np.ascontiguousarray(ph.labels)
    return perturb(ref, seed), ref, spacing


def write_pair(out_dir: Path, shape=FULL_SHAPE, slices=FULL_SLICES, seed: int = 3) -> tuple[Path, Path]:
    """Write ``pred.nii.gz`` and ``ref.nii.gz`` into ``out_dir``; returns their paths."""
    import nibabel as nib

    pred, ref, spacing = make_pair(shape, slices, seed)
    affine = np.diag([*spacing, 1.0])
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "pred.nii.gz", out_dir / "ref.nii.gz"
    for data, path in zip((pred, ref), paths):
        nib.save(nib.Nifti1Image(data, affine), str(path))
    return paths


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--shape", type=int, nargs=2, default=FULL_SHAPE)
    ap.add_argument("--slices", type=int, default=FULL_SLICES)
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    p, r = write_pair(a.out_dir, tuple(a.shape), a.slices, a.seed)
    print(f"wrote {p} and {r}")
