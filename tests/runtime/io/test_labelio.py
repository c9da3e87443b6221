"""Writing labels back onto the input grid, and the ITK-SNAP / 3D Slicer label tables (runtime/io/labelio.py)."""

from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.runtime.errors import OutputError
from limbseg_rt.runtime.io import geometry, labelio
from limbseg_rt.runtime.io.nifti import ReadOptions, read_image, read_raw
from limbseg_rt.runtime.model.labels import Label, LabelTable, default_label_table

NIB_DATA = Path(os.path.dirname(nib.__file__)) / "tests" / "data"
TABLE = default_label_table()
SHAPE = (5, 6, 7)


def _scan(tmp_path: Path, affine, name="scan.nii.gz", shape=SHAPE, version=1) -> Path:
    klass = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    data = np.random.default_rng(0).integers(0, 500, size=shape).astype(np.int16)
    path = tmp_path / name
    nib.save(klass(data, affine), path)
    return path


def _canonical_labels(shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, len(TABLE), size=shape).astype(np.uint8)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_labels_reload_with_identical_geometry(tmp_path):
    src = NIB_DATA / "example4d.nii.gz"  # oblique, 4D, qform and sform both set
    vol, props = read_image(src, options=ReadOptions(volume_index=0))
    labels = _canonical_labels(vol.shape)
    files = labelio.write_labels(labels, tmp_path / "seg.nii.gz", props, table=TABLE)
    assert files.labels == tmp_path / "seg.nii.gz"

    out = nib.load(files.labels)
    inp = nib.load(src)
    assert out.shape == props.shape == inp.shape[:3]
    for name in labelio.GEOMETRY_FIELDS:
        np.testing.assert_array_equal(out.header[name], inp.header[name], err_msg=name)
    np.testing.assert_array_equal(out.header.get_sform(), inp.header.get_sform())
    np.testing.assert_array_equal(out.header.get_qform(), inp.header.get_qform())
    np.testing.assert_array_equal(out.affine, props.affine)
    assert out.get_data_dtype() == np.uint8
    assert int(out.header["intent_code"]) == 1002 and out.header["intent_name"] == b"labels"
    raw_header = read_raw(files.labels)[0]  # nibabel's loaded header hides the stored scaling
    assert float(raw_header["scl_slope"]) == 1.0 and float(raw_header["scl_inter"]) == 0.0
    assert float(out.header["cal_min"]) == 0 and float(out.header["cal_max"]) == len(TABLE) - 1
    on_grid = np.asarray(out.dataobj)
    assert np.array_equal(on_grid, geometry.from_canonical(labels, props))
    # Reading the label file like a scan gives the canonical labels back.
    back, _ = read_image(files.labels)
    assert np.array_equal(back, labels.astype(np.float32))


@pytest.mark.parametrize("ornt", geometry.all_orientations(), ids=lambda o: "".join(geometry.axcodes(o)))
def test_round_trip_through_files_for_every_orientation(tmp_path, ornt):
    codes = "".join(geometry.axcodes(ornt))
    src = _scan(tmp_path, geometry.affine_from_axcodes((0.9, 1.1, 3.0), codes, SHAPE), name="scan.nii")
    vol, props = read_image(src)
    assert props.orientation == tuple(codes)
    # Labels derived from the canonical image itself: the file must hold the same derivation on the input grid.
    labels = (vol.astype(np.int64) % len(TABLE)).astype(np.uint8)
    labelio.write_labels(labels, tmp_path / "seg.nii", props, table=TABLE, descriptions=False)
    header, _, on_grid, _ = read_raw(tmp_path / "seg.nii")
    original = np.asarray(nib.load(src).dataobj)
    assert on_grid.shape == original.shape
    assert np.array_equal(on_grid, (original.astype(np.int64) % len(TABLE)).astype(np.uint8))
    np.testing.assert_array_equal(header.get_sform(), props.affine)


def test_labels_on_the_input_grid_and_nifti2(tmp_path):
    src = _scan(tmp_path, geometry.affine_from_axcodes((1, 1, 1), "LPS"), version=2)
    _, props = read_image(src)
    grid_labels = _canonical_labels(props.shape)
    files = labelio.write_labels(grid_labels, tmp_path / "seg.nii.gz", props, table=TABLE, grid="input")
    out = nib.load(files.labels)
    assert isinstance(out, nib.Nifti2Image)
    assert np.array_equal(np.asarray(out.dataobj), grid_labels)
    with pytest.raises(ValueError):
        labelio.write_labels(grid_labels[:-1], tmp_path / "x.nii.gz", props, table=TABLE, grid="input")
    with pytest.raises(ValueError):
        labelio.write_labels(grid_labels.astype(np.float32), tmp_path / "x.nii.gz", props, table=TABLE, grid="input")
    with pytest.raises(ValueError, match="outside the table"):
        labelio.write_labels(grid_labels + 40, tmp_path / "x.nii.gz", props, table=TABLE, grid="input")


def test_big_tables_are_stored_as_uint16(tmp_path):
    table = LabelTable(tuple(Label(i, f"structure {i}", f"S{i}", (i % 256, 0, 0)) for i in range(300)))
    _, props = read_image(_scan(tmp_path, np.eye(4)))
    labels = np.full(props.canonical_shape, 299, dtype=np.uint16)
    files = labelio.write_labels(labels, tmp_path / "big.nii.gz", props, table=table)
    out = nib.load(files.labels)
    assert out.get_data_dtype() == np.uint16 and np.all(np.asarray(out.dataobj) == 299)


def test_refuses_to_overwrite_the_input(tmp_path):
    src = _scan(tmp_path, np.eye(4))
    before = _sha(src)
    _, props = read_image(src)
    labels = _canonical_labels(props.canonical_shape)
    with pytest.raises(OutputError, match="overwrite the input"):
        labelio.write_labels(labels, src, props, table=TABLE)
    with pytest.raises(OutputError, match="overwrite the input"):
        labelio.write_labels(labels, tmp_path / "." / src.name, props, table=TABLE)
    link = tmp_path / "link.nii.gz"
    link.symlink_to(src)
    with pytest.raises(OutputError, match="overwrite the input"):
        labelio.write_labels(labels, link, props, table=TABLE)
    assert _sha(src) == before


def test_unusable_output_paths(tmp_path):
    _, props = read_image(_scan(tmp_path, np.eye(4)))
    labels = _canonical_labels(props.canonical_shape)
    with pytest.raises(OutputError, match="does not exist"):
        labelio.write_labels(labels, tmp_path / "missing" / "seg.nii.gz", props, table=TABLE)
    with pytest.raises(OutputError, match=r"must end in \.nii\.gz or \.nii"):
        labelio.write_labels(labels, tmp_path / "seg.png", props, table=TABLE)


def test_failed_read_back_leaves_nothing_and_keeps_an_existing_file(tmp_path, monkeypatch):
    src = _scan(tmp_path, np.eye(4))
    _, props = read_image(src)
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(b"previous result")
    real = labelio.label_image

    def wrong_geometry(*args, **kwargs):
        img = real(*args, **kwargs)
        img.header["srow_x"][3] += 1.0  # a 1 mm shift: the kind of silent error the check exists for
        return img

    monkeypatch.setattr(labelio, "label_image", wrong_geometry)
    with pytest.raises(OutputError, match="read-back check .*srow_x differs"):
        labelio.write_labels(_canonical_labels(props.canonical_shape), out, props, table=TABLE)
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz", "seg.nii.gz"]


def test_existing_output_is_replaced_and_input_untouched(tmp_path):
    src = _scan(tmp_path, np.diag([-1.0, 1.0, 2.0, 1.0]))
    before = _sha(src)
    _, props = read_image(src)
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(b"old")
    labelio.write_labels(_canonical_labels(props.canonical_shape), out, props, table=TABLE)
    assert nib.load(out).shape == SHAPE
    assert _sha(src) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary files left behind"


def _itksnap_rows(path: Path) -> list[list[str]]:
    return [shlex.split(line) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_itksnap_and_slicer_tables_list_every_label(tmp_path):
    _, props = read_image(_scan(tmp_path, np.eye(4)))
    files = labelio.write_labels(
        _canonical_labels(props.canonical_shape), tmp_path / "case_labels.nii.gz", props, table=TABLE
    )
    assert files.itksnap == tmp_path / "case_labels.itksnap.txt"
    assert files.slicer == tmp_path / "case_labels.ctbl"

    rows = _itksnap_rows(files.itksnap)
    assert len(rows) == len(TABLE)
    for row, lab in zip(rows, TABLE.labels):
        assert len(row) == 8
        idx, r, g, b = (int(v) for v in row[:4])
        alpha, vis, mesh, name = float(row[4]), int(row[5]), int(row[6]), row[7]
        assert (idx, (r, g, b), name) == (lab.index, lab.colour, lab.name)
        assert (alpha, vis, mesh) == ((0.0, 0, 0) if lab.index == 0 else (1.0, 1, 1))

    lines = files.slicer.read_text().splitlines()
    assert lines[0] == "# Color table file case_labels.ctbl" and lines[1] == f"# {len(TABLE)} values"
    entries = [line.split() for line in lines if not line.startswith("#")]
    assert len(entries) == len(TABLE)
    for entry, lab in zip(entries, TABLE.labels):
        assert len(entry) == 6
        assert int(entry[0]) == lab.index and entry[1] == lab.name.replace(" ", "_")
        assert tuple(int(v) for v in entry[2:5]) == lab.colour
        assert int(entry[5]) == (0 if lab.index == 0 else 255)


def test_label_stem():
    assert labelio.label_stem("/a/b/case.nii.gz") == Path("/a/b/case")
    assert labelio.label_stem("case.NII") == Path("case")
