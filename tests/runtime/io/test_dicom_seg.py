"""DICOM SEG output: passes dciodvfy, reads back with highdicom/pydicom, frames match the source slices."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from dicom_helpers import NIBABEL_DICOM, dciodvfy_errors, gunzip, pydicom, reoriented, tilted, write_series

from limbseg_rt.runtime.io import geometry
from limbseg_rt.runtime.io.dicom import read_dicom
from limbseg_rt.runtime.io.dicom.seg import AlgorithmInfo, write_seg
from limbseg_rt.runtime.model.labels import default_label_table

hd = pytest.importorskip("highdicom")
TABLE = default_label_table()
ALGO = AlgorithmInfo("limbseg-rt unet", "0.1.0", "ab" * 32, demo=True)
# dicom3tools as packaged in Debian 12 predates the Label Map Segmentation IOD (2024): it does not
# know the SOP class and applies the BINARY rule that segment numbers start at 1 (a LABELMAP lists
# background as segment 0). These two lines are all it may say about a LABELMAP SEG.
OLD_DCIODVFY_LABELMAP = (
    "Error - Information Object Not found",
    "Error - SegmentNumber not monotonically increasing from one by one",
)


@pytest.fixture(scope="module")
def phantom():
    from limbseg_rt.runtime.phantom.generate import make_phantom

    return make_phantom(4, slices=10, shape=(48, 40), spacing=(1.5, 1.75, 4.0))


def _labels_back(seg_path, source, present) -> np.ndarray:
    """The SEG as table indices on the input grid ``[columns, rows, slices]`` (via highdicom)."""
    seg = hd.seg.segread(seg_path)
    if source.enhanced:
        arr = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=str(source.datasets[0].SOPInstanceUID),
            source_frame_numbers=[f + 1 for _, f in source.frames],
            combine_segments=True,
            skip_overlap_checks=True,
            assert_missing_frames_are_empty=True,
        )
    else:
        arr = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds, _ in source.frames],
            combine_segments=True,
            skip_overlap_checks=True,
            assert_missing_frames_are_empty=True,
        )
    lut = np.zeros(len(present) + 1, dtype=np.int64)
    lut[1:] = present
    return lut[arr].transpose(2, 1, 0)


@pytest.mark.parametrize("codes,tilt", [("RAS", 0.0), ("LPS", 0.0), ("PIR", 0.0), ("LAS", 10.0)])
def test_binary_seg_valid_and_equal_to_the_labels(tmp_path, phantom, codes, tilt):
    image, truth = phantom
    img = tilted(reoriented(image, codes), tilt)
    lab = tilted(reoriented(truth, codes), tilt)
    write_series(img, tmp_path / "s", names="random")
    _, props, source = read_dicom(tmp_path / "s")
    canon = np.asarray(nib.as_closest_canonical(lab).dataobj).astype(np.uint8)
    assert np.array_equal(geometry.to_canonical(np.asarray(lab.dataobj), props).shape, canon.shape)
    out = write_seg(canon, props, tmp_path / "seg.dcm", table=TABLE, algorithm=ALGO)
    assert dciodvfy_errors(out) == []
    present = [int(v) for v in np.unique(canon) if v]
    back = _labels_back(out, source, present)
    assert np.array_equal(geometry.to_canonical(back, props), canon)  # no flip, no off-by-one
    ds = pydicom.dcmread(out)
    assert ds.SegmentationType == "BINARY" and len(ds.SegmentSequence) == len(present)
    assert [int(s.SegmentNumber) for s in ds.SegmentSequence] == list(range(1, len(present) + 1))
    first = ds.SegmentSequence[0]
    assert first.SegmentLabel == f"{TABLE[present[0]].name} ({TABLE[present[0]].code})"
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "127954009"
    assert "DEMO" in ds.SeriesDescription
    algo = first.SegmentationAlgorithmIdentificationSequence[0]
    assert "ab" * 32 in algo.AlgorithmParameters
    refs = {str(r.ReferencedSOPInstanceUID) for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs == {str(d.SOPInstanceUID) for d in source.datasets}
    assert ds.StudyInstanceUID == source.study_uid and ds.PatientName == "PHANTOM^LIMB"
    # every SEG frame sits at its source slice's position
    src_pos = {str(d.SOPInstanceUID): [float(v) for v in d.ImagePositionPatient] for d in source.datasets}
    for item in ds.PerFrameFunctionalGroupsSequence:
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        np.testing.assert_allclose(
            [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient], src_pos[uid], atol=1e-3
        )


def test_labelmap_seg(tmp_path, phantom):
    image, truth = phantom
    write_series(image, tmp_path / "s")
    _, props, source = read_dicom(tmp_path / "s")
    canon = np.asarray(truth.dataobj).astype(np.uint8)
    out = write_seg(canon, props, tmp_path / "seg.dcm", table=TABLE, algorithm=ALGO, seg_type="labelmap")
    errors = dciodvfy_errors(out)
    assert all(e.startswith(OLD_DCIODVFY_LABELMAP) for e in errors), errors
    ds = pydicom.dcmread(out)
    assert ds.SegmentationType == "LABELMAP"
    present = [int(v) for v in np.unique(canon) if v]
    assert np.array_equal(geometry.to_canonical(_labels_back(out, source, present), props), canon)


def test_enhanced_mr_source_frames(tmp_path):
    """A SEG on the Philips Enhanced MR file (176 frames): frame f refers to source frame f."""
    (tmp_path / "in").mkdir()
    src = gunzip(NIBABEL_DICOM / "philips_mprage.dcm.gz", tmp_path / "in" / "mprage.dcm")
    vol, props, source = read_dicom(src)
    labels = np.zeros(vol.shape, np.uint8)
    labels[10:30, 40:60, 100:120] = 5  # a block: only some frames carry it
    labels[60:70, 80:90, 30:40] = 12
    out = write_seg(labels, props, tmp_path / "seg.dcm", table=TABLE, algorithm=ALGO)
    assert dciodvfy_errors(out) == []
    back = _labels_back(out, source, [5, 12])
    assert np.array_equal(geometry.to_canonical(back, props), labels)


def test_no_muscle_gives_no_seg_and_bad_folder_is_refused(tmp_path, phantom):
    from limbseg_rt.runtime.errors import OutputError

    image, _ = phantom
    write_series(image, tmp_path / "s")
    vol, props, _ = read_dicom(tmp_path / "s")
    empty = np.zeros(vol.shape, np.uint8)
    assert write_seg(empty, props, tmp_path / "seg.dcm", table=TABLE, algorithm=ALGO) is None
    assert not (tmp_path / "seg.dcm").exists()
    with pytest.raises(OutputError, match="does not exist"):
        write_seg(empty + 1, props, tmp_path / "nope" / "seg.dcm", table=TABLE, algorithm=ALGO)
