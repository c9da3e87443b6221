"""The committed demo checkpoints (``checkpoints/``) load safely and reproduce the bundled models."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from limbseg_rt.export.recover_checkpoint import check_recovery, recover  # noqa: E402
from limbseg_rt.models import create_model  # noqa: E402
from limbseg_rt.models.checkpoint import load_checkpoint, read_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CASES = [("unet", "unet-fp32.onnx"), ("sc-unet", "sc-unet-int8.onnx"), ("attention-unet", "attention-unet-int8.onnx")]


@pytest.mark.parametrize("arch, onnx_name", CASES)
def test_committed_checkpoint_reproduces_its_bundled_model(arch, onnx_name):
    onnx_path = ROOT / "runtime" / "data" / "models" / onnx_name
    ckpt = read_checkpoint(ROOT / "checkpoints" / f"{arch}.pth.tar")  # weights_only=True inside
    assert ckpt["arch"] == arch and ckpt["recovered_from"] == onnx_name
    net = create_model(arch, features=tuple(ckpt["features"]))
    load_checkpoint(net, ROOT / "checkpoints" / f"{arch}.pth.tar")
    _, meta = recover(onnx_path)
    check = check_recovery(net.eval(), meta, onnx_path, slices=2)
    if onnx_name.endswith("fp32.onnx"):
        assert check["max_rel_logit_error"] < 1e-5 and check["label_agreement"] == 1.0
    else:
        assert check["label_agreement"] >= 0.999


def test_recovery_refuses_a_model_that_does_not_fit(tmp_path):
    """A network whose parameters the file does not hold is an error, not a silently random layer."""
    from limbseg_rt.export.recover_checkpoint import onnx_parameters, recovered_state_dict

    params, meta = onnx_parameters(ROOT / "runtime" / "data" / "models" / "unet-fp32.onnx")
    other = create_model("sc-unet", features=tuple(meta["features"]))  # has a position layer the UNet lacks
    with pytest.raises(ValueError, match="does not hold"):
        recovered_state_dict(other, params)
