"""The runtime works on a workstation without torch, scipy, onnx, tqdm, models/ or export/.

A fresh interpreter installs a ``sys.meta_path`` finder that raises ImportError for those names,
then imports every module of ``limbseg_rt.runtime``, builds the CLI parser (which imports every
command module: heavy imports must stay inside their ``main``), runs ``limbseg-rt run`` on a tiny
scan and segments it again through the embedding API.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np

BLOCKED = (
    "torch",
    "torchvision",
    "scipy",
    "onnx",
    "onnxscript",
    "onnxconverter_common",
    "tqdm",
    "medpy",
    "matplotlib",
    "limbseg_rt.models",
    "limbseg_rt.export",
)

SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    BLOCKED = {blocked!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"{{name}} is blocked: the runtime must not need it")
            return None

    sys.meta_path.insert(0, Blocker())

    import limbseg_rt.runtime as rt
    imported = []
    for info in pkgutil.walk_packages(rt.__path__, prefix="limbseg_rt.runtime."):
        importlib.import_module(info.name)
        imported.append(info.name.removeprefix("limbseg_rt.runtime."))

    from limbseg_rt.cli import build_parser, main
    build_parser()
    code = main(["run", {scan!r}, "--model", {model!r}, "--provider", "cpu", "--threads", "1",
                 "--out", {out!r}])
    assert code == 0, code

    import nibabel as nib
    from limbseg_rt.runtime.api import Segmenter
    img = nib.load({scan!r})
    with Segmenter({model!r}, provider="cpu", threads=1, batch_size=4) as seg:
        result = seg.segment(img)
    leaked = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
    print(json.dumps({{
        "imported": imported,
        "labels_shape": list(result.labels.shape),
        "found": len(result.report.found),
        "provider": result.report.manifest["engine"]["provider"],
        "leaked": leaked,
    }}))
    """
)


def test_runtime_imports_and_segments_with_torch_blocked(tiny_unet_path, tmp_path):
    rng = np.random.default_rng(3)
    data = (rng.random((48, 40, 6)) * 1000).astype(np.int16)
    data[10:30, 10:25, :] += 1500
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 4.0, 1.0])), str(scan))
    out = tmp_path / "labels.nii.gz"
    code = SCRIPT.format(blocked=BLOCKED, scan=str(scan), model=str(tiny_unet_path), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in (
        "inference.pipeline",
        "inference.tiling",
        "report.run_report",
        "api",
        "inference.preprocess",
        "model.metadata",
        "model.position",
        "io.nifti",
        "engine.runners",
        "phantom.generate",
    ):
        assert name in got["imported"]
    assert got["labels_shape"] == [48, 40, 6]
    assert got["found"] >= 2
    assert got["provider"] == "cpu"
    assert got["leaked"] == []
    assert nib.load(str(tmp_path / "labels.nii.gz")).shape == (48, 40, 6)
