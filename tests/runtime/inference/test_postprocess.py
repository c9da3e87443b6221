"""Stray-run suppression: fragments away from a muscle's run of slices go, real muscle ends stay."""

from __future__ import annotations

import numpy as np

from limbseg_rt.runtime.inference.pipeline import PipelineOptions, segment_canonical
from limbseg_rt.runtime.inference.postprocess import suppress_stray_runs
from limbseg_rt.runtime.model.metadata import read_metadata


def _two_muscles(nz=30):
    lab = np.zeros((40, 40, nz), np.uint8)
    lab[5:20, 5:20, :] = 1  # muscle 1 runs through the whole scan (truly cut at both ends)
    lab[22:35, 22:35, 2:15] = 2  # muscle 2 ends inside the scan
    return lab


def test_fragment_far_from_the_muscle_goes_back_to_its_surroundings():
    lab = _two_muscles()
    lab[8:12, 8:12, 26:30] = 2  # muscle 2 "seen" inside muscle 1 near the last slice
    res = suppress_stray_runs(lab)
    assert res.voxels == 4 * 4 * 4 and res.classes == (2,)
    assert np.array_equal(lab, _two_muscles())  # muscle 1 got its pixels back
    assert 2 not in np.unique(lab[:, :, -1])  # no claim that muscle 2 touches the last slice


def test_fragment_in_background_becomes_background():
    lab = _two_muscles()
    lab[36:39, 1:4, 25] = 2
    res = suppress_stray_runs(lab)
    assert res.voxels == 9 and np.array_equal(lab, _two_muscles())


def test_real_muscles_at_the_ends_and_short_muscles_are_kept():
    lab = _two_muscles()
    lab[30:34, 2:6, 27:30] = 3  # a muscle seen only in the last three slices: its only run
    want = lab.copy()
    res = suppress_stray_runs(lab)
    assert res.voxels == 0 and np.array_equal(lab, want)
    assert {1, 3} <= set(np.unique(lab[:, :, -1]))


def test_missed_slices_do_not_split_a_muscle_and_tapering_ends_stay():
    lab = _two_muscles()
    for z in (7, 8, 9):
        lab[:, :, z][lab[:, :, z] == 2] = 0  # the network missed muscle 2 in three slices
    lab[27:29, 27:29, 15] = 2  # its tapering end: 4 pixels next to the run
    want = lab.copy()
    assert suppress_stray_runs(lab).voxels == 0 and np.array_equal(lab, want)


def test_pipeline_relabels_strays_and_records_it(tiny_unet_path):
    md = read_metadata(tiny_unet_path)
    h, w = md.input_hw
    vol = np.random.default_rng(0).random((64, 48, 12), dtype=np.float32) * 100

    def model(stray: bool):
        z0 = {"z": 0}

        def predict(image, position):
            n = image.shape[0]
            logits = np.zeros((n, md.classes, h, w), np.float32)
            logits[:, 0] = 1.0
            logits[:, 1, 10:40, 10:30] = 2.0  # muscle 1 in every slice
            for i in range(n):
                z = z0["z"] + i
                if z < 6:
                    logits[i, 5, 50:60, 5:15] = 2.0  # muscle 5's body: slices 0-5
                if stray and z == 11:  # last slice: a fragment of muscle 5 inside muscle 1
                    logits[i, 5, 20:26, 15:20] = 3.0
            z0["z"] += n
            return logits

        return predict

    opts = PipelineOptions(fit="resize", batch_size=4, prefetch=False)
    clean = segment_canonical(vol, md, model(False), options=opts)
    run = segment_canonical(vol, md, model(True), options=opts)
    assert run.strays is not None and run.strays.voxels > 0 and run.strays.classes == (5,)
    assert np.array_equal(run.labels, clean.labels)
    off = segment_canonical(
        vol, md, model(True), options=PipelineOptions(fit="resize", batch_size=4, prefetch=False, suppress_strays=False)
    )
    assert off.strays is None and 5 in np.unique(off.labels[:, :, -1])
    assert 5 not in np.unique(run.labels[:, :, -1])


def test_working_memory_stays_within_the_slices_that_hold_strays():
    """The rule runs after the whole volume is in memory (peak RSS gate: 12 B/voxel in all), so its
    own allocations stay far below one byte per voxel and do not grow with the slice count: per-slice
    counts (bincount widens one slice to int64) and copies of only the two slices that hold a stray
    (it once built two int64 copies of the volume, 16 B/voxel)."""
    import tracemalloc

    lab = np.zeros((256, 256, 200), np.uint8)
    lab[20:120, 20:120, :] = 1
    lab[130:230, 130:230, 10:150] = 2
    lab[40:50, 40:50, 190] = 2  # strays of muscle 2 in two slices
    lab[40:50, 40:50, 195] = 2
    tracemalloc.start()
    try:
        res = suppress_stray_runs(lab)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.voxels == 200 and res.classes == (2,)
    assert 2 not in np.unique(lab[:, :, 185:])
    assert peak < 0.5 * lab.size, f"{peak / lab.size:.2f} B/voxel"
    assert peak < 64 * lab.shape[0] * lab.shape[1], f"{peak / (lab.shape[0] * lab.shape[1]):.0f} B per slice pixel"
