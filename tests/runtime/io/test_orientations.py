"""Canonical reorientation on nibabel.orientations: identical results in all 48 orientations.

Two checks: (1) the index maps and array views equal the pure-numpy implementation the runtime used
before (copied here as the reference, ``_old_*``), strides included; (2) end to end on phantoms
stored in every orientation: the strict reader gives the same canonical volume as the RAS phantom,
and the label file written back from the canonical truth is byte-identical (voxel data and
geometry fields) to the phantom's own label array in that orientation.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.runtime.io import geometry, labelio
from limbseg_rt.runtime.io.nifti import read_image, read_labels
from limbseg_rt.runtime.model.labels import default_label_table
from limbseg_rt.runtime.phantom.generate import make_phantom

ORIENTATIONS = geometry.all_orientations()


def _old_index_map(shape, ornt):
    m = np.zeros((4, 4))
    m[3, 3] = 1.0
    for axis, (w, s) in enumerate(ornt):
        m[axis, w] = float(s)
        if s == -1:
            m[axis, 3] = float(shape[axis] - 1)
    return m


def _old_canonical(arr, ornt):
    flips = tuple(a for a, (_, s) in enumerate(ornt) if s == -1)
    if flips:
        arr = np.flip(arr, axis=flips)
    order = [0, 0, 0]
    for axis, (w, _) in enumerate(ornt):
        order[w] = axis
    return np.transpose(arr, tuple(order) + tuple(range(3, arr.ndim)))


def test_there_are_48_distinct_orientations():
    assert len(set(ORIENTATIONS)) == 48


@pytest.mark.parametrize("ornt", ORIENTATIONS, ids=lambda o: "".join(geometry.axcodes(o)))
def test_nibabel_reorientation_equals_the_previous_index_maps(ornt):
    arr = np.arange(3 * 4 * 5 * 2, dtype=np.int16).reshape(3, 4, 5, 2)
    codes = "".join(geometry.axcodes(ornt))
    assert geometry.ornt_from_axcodes(codes) == ornt
    assert np.array_equal(geometry.canonical_index_map(arr.shape, ornt), _old_index_map(arr.shape, ornt))
    new, old = geometry.canonical_array(arr, ornt), _old_canonical(arr, ornt)
    assert new.shape == old.shape and new.strides == old.strides and np.array_equal(new, old)
    assert np.shares_memory(new, arr), "a view, not a copy"
    back = geometry.input_array(new, ornt)
    assert back.shape == arr.shape and np.array_equal(back, arr)


@pytest.fixture(scope="module")
def ras_phantom():
    image, labels = make_phantom(11, slices=6, shape=(40, 32), spacing=(2.0, 2.5, 6.0))
    return np.asarray(image.dataobj), np.asarray(labels.dataobj)


@pytest.mark.parametrize("ornt", ORIENTATIONS, ids=lambda o: "".join(geometry.axcodes(o)))
def test_phantom_in_every_orientation_round_trips_byte_for_byte(ornt, ras_phantom, tmp_path):
    codes = "".join(geometry.axcodes(ornt))
    image, labels = make_phantom(11, slices=6, shape=(40, 32), spacing=(2.0, 2.5, 6.0), orientation=codes)
    scan = tmp_path / "scan.nii.gz"
    nib.save(image, str(scan))
    nib.save(labels, str(tmp_path / "truth.nii.gz"))

    canon, props = read_image(scan)
    assert props.orientation == tuple(codes)
    assert np.array_equal(canon, ras_phantom[0].astype(np.float32)), "same canonical volume in every orientation"
    truth_canon, _ = read_labels(tmp_path / "truth.nii.gz", grid="canonical")
    assert np.array_equal(truth_canon, ras_phantom[1])

    files = labelio.write_labels(
        truth_canon, tmp_path / "out_labels.nii.gz", props, table=default_label_table(), descriptions=False
    )
    written = nib.load(files.labels)
    stored = np.asarray(labels.dataobj)
    got = np.asarray(written.dataobj)
    assert got.dtype == stored.dtype and got.tobytes(order="F") == stored.tobytes(order="F")
    for field in labelio.GEOMETRY_FIELDS:
        assert np.array_equal(written.header[field], image.header[field]), field
