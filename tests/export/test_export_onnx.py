"""fp32 export of every registered architecture: parity, clean graph, metadata, dynamic shapes, CLI."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from limbseg_rt.cli import main as cli_main
from limbseg_rt.export.onnx_export import export_model
from limbseg_rt.export.parity_data import EDGE_POSITIONS, parity_sets
from limbseg_rt.models import MODELS, create_model, save_checkpoint
from limbseg_rt.runtime.errors import ModelError
from limbseg_rt.runtime.model.labels import Label, LabelTable
from limbseg_rt.runtime.model.metadata import read_metadata

TINY = (4, 8, 16, 32)
HW = (64, 48)
# Every architecture listed here gets an export + parity test below; the registry test makes sure
# nothing registered is missing from it.
EXPORT_TESTED = ("unet", "attention-unet", "sc-unet")


def test_every_registered_architecture_has_export_parity_coverage():
    missing = sorted(set(MODELS) - set(EXPORT_TESTED))
    assert not missing, f"architectures without an export + parity test: {missing}"


@pytest.fixture(scope="module")
def slices():
    return parity_sets("phantom", hw=HW, slices_per_volume=4)


def _randomised(arch: str, seed: int = 0) -> torch.nn.Module:
    """A tiny network whose BatchNorm layers have non-trivial statistics (so folding matters)."""
    torch.manual_seed(seed)
    model = create_model(arch, features=TINY)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def exported(slices, tmp_path_factory):
    """arch -> (model, checkpoint path, ExportResult): one fp32 export per architecture."""
    out = {}
    folder = tmp_path_factory.mktemp("fp32")
    for arch in EXPORT_TESTED:
        model = _randomised(arch)
        ckpt = save_checkpoint(model, folder / f"{arch}.pth.tar", extra={"arch": arch, "features": TINY})
        result = export_model(
            arch,
            ckpt,
            folder / f"{arch}.onnx",
            calibration=slices,
            parity_hw=HW,
            pixel_spacing_mm=(1.5, 1.25),
            threads=1,
        )
        out[arch] = (model, ckpt, result)
    return out


@pytest.mark.parametrize("arch", EXPORT_TESTED)
def test_fp32_export_passes_parity_on_real_slices(arch, exported):
    _, _, result = exported[arch]
    p = result.parity
    assert p["passed"] and p["precision"] == "fp32"
    assert p["label_agreement"] >= 0.9999
    assert p["max_logit_error"] <= 1e-4
    assert p["labels_output_consistent"] is True
    assert p["source"].startswith("phantom-")
    n_held = 4 + (len(EDGE_POSITIONS) if arch == "sc-unet" else 0)
    assert p["slices"] == n_held and p["slice_hw"] == list(HW)


@pytest.mark.parametrize("arch", EXPORT_TESTED)
def test_graph_is_clean_and_batchnorm_free(arch, exported):
    _, _, result = exported[arch]
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["BatchNormalization"] == 0
    assert ops["ArgMax"] == 1
    assert ops["Conv"] == (31 if arch == "attention-unet" else 19)
    assert not {"Identity", "Shape", "Expand"} & set(ops)
    ins = {i.name: i.type.tensor_type for i in proto.graph.input}
    outs = {o.name: o.type.tensor_type for o in proto.graph.output}
    assert list(ins) == (["image", "position"] if arch == "sc-unet" else ["image"])
    assert list(outs) == ["logits", "labels"]
    assert ins["image"].elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in ins["image"].shape.dim] == ["N", 1, "H", "W"]
    assert [d.dim_param or d.dim_value for d in outs["logits"].shape.dim] == ["N", 38, "H", "W"]
    assert outs["labels"].elem_type == onnx.TensorProto.UINT8
    if arch == "sc-unet":
        assert ins["position"].elem_type == onnx.TensorProto.FLOAT
        assert [d.dim_param for d in ins["position"].shape.dim] == ["N"]


@pytest.mark.parametrize("arch", EXPORT_TESTED)
def test_metadata_round_trips(arch, exported):
    _, ckpt, result = exported[arch]
    md = read_metadata(result.path)
    assert md == result.metadata
    assert md.architecture == arch and md.features == TINY and md.classes == 38
    assert md.input_hw == (272, 240) and md.precision == "fp32"
    assert md.pixel_spacing_mm == (1.5, 1.25)
    assert md.checkpoint_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert md.versions["torch"] == torch.__version__ and md.versions["onnxruntime"] == ort.__version__
    assert md.versions["opset"] == 18
    assert md.parity["passed"] is True
    assert md.needs_position == (arch == "sc-unet")
    if arch == "sc-unet":
        assert md.position.direction == "proximal_to_distal" and md.position.bins == 100


@pytest.mark.parametrize("arch", EXPORT_TESTED)
def test_dynamic_batch_and_size_match_pytorch(arch, exported):
    model, _, result = exported[arch]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for n, hw in ((1, (32, 80)), (3, (272, 240))):
        x = rng.random((n, 1, *hw), dtype=np.float32)
        p = np.array([0.004, 0.5, 1.0][:n], dtype=np.float32)
        feeds = {"image": x, "position": p} if arch == "sc-unet" else {"image": x}
        logits, labels = session.run(None, feeds)
        with torch.no_grad():
            ref = (
                model(torch.from_numpy(x), torch.from_numpy(p)) if arch == "sc-unet" else model(torch.from_numpy(x))
            ).numpy()
        assert logits.shape == (n, 38, *hw) and labels.shape == (n, *hw) and labels.dtype == np.uint8
        np.testing.assert_allclose(logits, ref, atol=1e-4 * np.abs(ref).max() + 1e-5)
        np.testing.assert_array_equal(labels, logits.argmax(1))


def test_sc_unet_graph_uses_the_position_rule(exported):
    """Positions in the same 1% bin give identical logits; neighbouring bins do not (random weights)."""
    _, _, result = exported["sc-unet"]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = np.repeat(np.random.default_rng(2).random((1, 1, 32, 32), dtype=np.float32), 6, axis=0)
    # 0.004 and 0 and 1 share bin 99; 0.01 is bin 0; 0.0099 is bin 99 (int(0.99) - 1 = -1 -> 99)
    p = np.array([0.0, 0.004, 1.0, 0.01, 0.0099, 0.5], dtype=np.float32)
    logits = session.run(["logits"], {"image": x, "position": p})[0]
    np.testing.assert_array_equal(logits[0], logits[1])
    np.testing.assert_array_equal(logits[0], logits[2])
    np.testing.assert_array_equal(logits[0], logits[4])
    assert not np.allclose(logits[0], logits[3])
    assert not np.allclose(logits[3], logits[5])


def test_cli_exports_authors_checkpoint_without_features_entry(slices, tmp_path, capsys, monkeypatch):
    """The authors' file: {"state_dict", "optimizer"} with DataParallel keys and no "features"."""
    model = _randomised("unet", seed=5)
    opt = torch.optim.Adam(model.parameters())
    ckpt = tmp_path / "my_checkpoint.pth.tar"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "optimizer": opt.state_dict()}, ckpt
    )
    out = tmp_path / "unet.onnx"
    # the CLI reads phantom slices itself; hand it the prepared ones to keep the test fast
    import limbseg_rt.export.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "parity_sets", lambda calibration, *, hw, slices_per_volume: slices)
    code = cli_main(
        [
            "export",
            "--arch",
            "unet",
            "--checkpoint",
            str(ckpt),
            "--out",
            str(out),
            "--features",
            "4",
            "8",
            "16",
            "32",
            "--no-with-labels-output",
            "--input-hw",
            "64",
            "48",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "wrote" in captured.out and "label agreement" in captured.out
    md = read_metadata(out)
    assert md.features == TINY and md.outputs == ("logits",) and md.input_hw == HW
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["logits"]


def test_custom_label_table_travels_in_the_model(slices, tmp_path):
    table = LabelTable(
        (
            Label(0, "background", "BG", (0, 0, 0)),
            Label(1, "thigh", "TH", (250, 0, 0)),
            Label(2, "calf", "CA", (0, 250, 0)),
        )
    )
    labels_json = tmp_path / "labels.json"
    labels_json.write_text(table.to_json())
    torch.manual_seed(3)
    ckpt = save_checkpoint(
        create_model("attention-unet", features=(2, 4), classes=3), tmp_path / "a.pth.tar", extra={"features": (2, 4)}
    )
    with pytest.raises(ModelError, match=r"final_conv.weight \(checkpoint \[3, 2, 1, 1\] vs model \[38, 2, 1, 1\]\)"):
        export_model("attention-unet", ckpt, tmp_path / "x.onnx", calibration=slices, input_hw=HW)
    out = tmp_path / "a.onnx"
    export_model("attention-unet", ckpt, out, labels=labels_json, calibration=slices, input_hw=HW, threads=1)
    md = read_metadata(out)
    assert md.labels == table and md.classes == 3 and md.features == (2, 4)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(["logits"], {"image": np.zeros((1, 1, 8, 12), np.float32)})[0].shape == (1, 3, 8, 12)
