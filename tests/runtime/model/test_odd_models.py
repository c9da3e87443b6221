"""Odd models (issue 17): metadata that no usable model has, or that disagrees with the graph, is
refused when the model is loaded: exit 4, exactly one stderr line, nothing written, input untouched.

Each odd model is a tiny model from ``onnx_factory`` with its metadata or graph edited with ``onnx``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from onnx_factory import make_tiny_model, small_label_table

from limbseg_rt.cli import main as cli_main
from limbseg_rt.runtime.engine import providers as prov
from limbseg_rt.runtime.engine.runners import create_runner
from limbseg_rt.runtime.errors import EXIT_MODEL, ModelError
from limbseg_rt.runtime.model.metadata import METADATA_KEY, PositionSpec

HW = (32, 24)


def _edit_metadata(path: Path, **changes) -> Path:
    import onnx

    model = onnx.load(path)
    [prop] = [p for p in model.metadata_props if p.key == METADATA_KEY]
    md = json.loads(prop.value)
    md.update(changes)
    prop.value = json.dumps(md)
    onnx.save(model, path)
    return path


def _rename_graph_tensor(path: Path, old: str, new: str) -> Path:
    """Rename a graph input or output (and every node port using it); the metadata is kept."""
    import onnx

    model = onnx.load(path)
    g = model.graph
    for vi in list(g.input) + list(g.output):
        if vi.name == old:
            vi.name = new
    for node in g.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _odd(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.onnx"
    if kind == "input-size-huge":
        return _edit_metadata(make_tiny_model(path, hw=HW), input_hw=[100000, 100000])
    if kind.startswith("input-size-"):
        size = int(kind.removeprefix("input-size-").replace("minus", "-"))
        return _edit_metadata(make_tiny_model(path, hw=HW), input_hw=[size, HW[1]])
    if kind == "promised-position-missing":
        return _edit_metadata(
            make_tiny_model(path, hw=HW),
            architecture="sc-unet",
            inputs=["image", "position"],
            position=PositionSpec().to_dict(),
        )
    if kind == "unpromised-position":
        return _edit_metadata(
            make_tiny_model(path, hw=HW, position=True), architecture="unet", inputs=["image"], position=None
        )
    if kind == "image-input-renamed":
        return _rename_graph_tensor(make_tiny_model(path, hw=HW), "image", "input")
    if kind == "metadata-input-renamed":
        p = _rename_graph_tensor(make_tiny_model(path, hw=HW), "image", "input")
        return _edit_metadata(p, inputs=["input"])
    if kind == "promised-labels-missing":
        return _edit_metadata(make_tiny_model(path, hw=HW, labels_output=False), outputs=["logits", "labels"])
    if kind == "logits-renamed":
        return _rename_graph_tensor(make_tiny_model(path, hw=HW, labels_output=False), "logits", "scores")
    if kind == "class-count-disagrees":
        table = small_label_table(5)
        return _edit_metadata(make_tiny_model(path, hw=HW, labels_output=False), labels=table.to_list(), classes=5)
    if kind == "slice-size-disagrees":  # the graph fixes 32 x 24; the metadata says 48 x 24
        return _edit_metadata(make_tiny_model(path, hw=HW), input_hw=[48, 24])
    raise AssertionError(kind)


# (kind, words the one error line must contain)
CASES = [
    ("input-size-0", "input size 0 x 24 is outside"),
    ("input-size-minus5", "input size -5 x 24 is outside"),
    ("input-size-huge", "input size 100000 x 100000 is outside"),
    ("promised-position-missing", "graph's inputs ['image'] are not the metadata's ['image', 'position']"),
    ("unpromised-position", "graph's inputs ['image', 'position'] are not the metadata's ['image']"),
    ("image-input-renamed", "graph's inputs ['input'] are not the metadata's ['image']"),
    ("metadata-input-renamed", "the first must be 'image'"),
    ("promised-labels-missing", "the graph has no output 'labels'"),
    ("logits-renamed", "the graph has no output 'logits'"),
    ("class-count-disagrees", "'logits' has 38 on axis 1; the metadata says 5"),
    ("slice-size-disagrees", "'image' has 32 on axis 2; the metadata says 48"),
]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("scan")
    img = nib.Nifti1Image(rng.integers(0, 1000, (40, 36, 4)).astype(np.int16), np.diag([1.5, 1.5, 5.0, 1.0]))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path = folder / "scan.nii.gz"
    nib.save(img, str(path))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind, words", CASES, ids=[c[0] for c in CASES])
def test_odd_model_is_refused_at_load_with_one_line_and_exit_4(kind, words, scan, tmp_path, capfd):
    model = _odd(kind, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = _sha(scan)
    code = cli_main(
        [
            "run",
            str(scan),
            "--model",
            str(model),
            "--provider",
            "cpu",
            "--threads",
            "1",
            "--out",
            str(out_dir / "seg.nii.gz"),
            "--report",
            str(out_dir / "r.json"),
            "--csv",
            str(out_dir / "v.csv"),
        ]
    )
    out, err = capfd.readouterr()  # file-descriptor level: ONNX Runtime's own log lines count too
    assert code == EXIT_MODEL, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"limbseg-rt: error: {kind}.onnx: ") and words in lines[0], lines[0]
    assert out == ""
    assert list(out_dir.iterdir()) == []
    assert sorted(p.name for p in scan.parent.iterdir()) == ["scan.nii.gz"]
    assert _sha(scan) == before


@pytest.mark.parametrize("kind", ["input-size-huge", "image-input-renamed", "class-count-disagrees"])
def test_info_refuses_an_odd_model_the_same_way(kind, tmp_path, capfd):
    code = cli_main(["info", str(_odd(kind, tmp_path))])
    out, err = capfd.readouterr()
    assert code == EXIT_MODEL and out == ""
    [line] = err.splitlines()
    assert line.startswith(f"limbseg-rt: error: {kind}.onnx") and dict(CASES)[kind] in line


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs the openvino package")
@pytest.mark.parametrize(
    "kind", ["promised-position-missing", "image-input-renamed", "class-count-disagrees", "input-size-huge"]
)
def test_the_openvino_runtime_engine_checks_the_same(kind, tmp_path):
    model = _odd(kind, tmp_path)
    words = dict(CASES)[kind]
    with pytest.raises(ModelError, match="^" + kind) as err:
        create_runner(model, provider="openvino", available=[prov.CPU, prov.OPENVINO_RUNTIME], threads=1)
    assert words in str(err.value)


def test_well_formed_models_still_load(tmp_path):
    for kw in ({}, {"position": True}, {"labels_output": False, "classes": 5}):
        create_runner(make_tiny_model(tmp_path / "ok.onnx", hw=HW, **kw), provider="cpu", threads=1).close()
