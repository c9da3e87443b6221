"""Export failures: one clear line, the promised exit code, and no file left behind."""

from __future__ import annotations

import sys

import pytest
import torch

import limbseg_rt.export.onnx_export as onnx_export
import limbseg_rt.export.spec as export_spec
from limbseg_rt.cli import main as cli_main
from limbseg_rt.export.parity_data import parity_sets
from limbseg_rt.export.spec import Tolerance
from limbseg_rt.models import create_model, save_checkpoint

TINY = (4, 8, 16, 32)
HW = (64, 48)


@pytest.fixture(scope="module")
def slices():
    return parity_sets("phantom", hw=HW, slices_per_volume=2)


def _export(ckpt, out, *extra, arch="unet"):
    return cli_main(
        ["export", "--arch", arch, "--checkpoint", str(ckpt), "--out", str(out), "--input-hw", *map(str, HW), *extra]
    )


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("limbseg-rt: error: "), err
    return err


class _Evil:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def _bad_checkpoints(folder):
    good = create_model("unet", features=TINY).state_dict()
    cases = {}
    keys = dict(good)
    keys.pop("downs.1.conv.3.weight")
    keys["att_block.0.W_g.0.weight"] = torch.zeros(1)
    cases["keys"] = ({"state_dict": keys}, ["downs.1.conv.3.weight", "att_block.0.W_g.0.weight"])
    wide = create_model("unet", features=(8, 16, 32, 64)).state_dict()
    cases["shapes"] = ({"state_dict": wide, "optimizer": None}, ["shape mismatch", "downs.0.conv.0.weight"])
    cases["not-a-checkpoint"] = (b"PK\x03\x04 definitely not a checkpoint", ["not a readable PyTorch checkpoint"])
    cases["no-state-dict"] = ({"epoch": 4, "optimizer": None}, ["no 'state_dict'"])
    cases["malicious"] = ({"state_dict": good, "x": _Evil(folder / "pwned")}, ["would run code"])
    return cases


@pytest.mark.parametrize("case", ["keys", "shapes", "not-a-checkpoint", "no-state-dict", "malicious"])
def test_bad_checkpoint_exits_4_with_one_line_and_no_output(case, tmp_path, capsys):
    content, expected = _bad_checkpoints(tmp_path)[case]
    ckpt = tmp_path / "bad.pth.tar"
    if isinstance(content, bytes):
        ckpt.write_bytes(content)
    else:
        torch.save(content, ckpt)
    out = tmp_path / "model.onnx"
    assert _export(ckpt, out, "--features", *map(str, TINY)) == 4
    err = _one_line_error(capsys)
    for text in expected:
        assert text in err
    assert not out.exists() and not (tmp_path / "pwned").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth.tar"]


def test_missing_checkpoint_and_wrong_architecture(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert _export(tmp_path / "nope.pth.tar", out) == 4
    assert "checkpoint not found" in _one_line_error(capsys)
    ckpt = save_checkpoint(
        create_model("sc-unet", features=TINY), tmp_path / "sc.pth.tar", extra={"arch": "sc-unet", "features": TINY}
    )
    assert _export(ckpt, out) == 4
    assert "pass --arch sc-unet" in _one_line_error(capsys)
    assert not out.exists()


def test_output_folder_missing_exits_8(tmp_path, capsys):
    ckpt = save_checkpoint(create_model("unet", features=TINY), tmp_path / "u.pth.tar", extra={"features": TINY})
    assert _export(ckpt, tmp_path / "no" / "such" / "m.onnx") == 8
    assert "output folder does not exist" in _one_line_error(capsys)


def test_bad_calibration_folder_exits_3(tmp_path, capsys):
    ckpt = save_checkpoint(create_model("unet", features=TINY), tmp_path / "u.pth.tar", extra={"features": TINY})
    (tmp_path / "calib").mkdir()
    assert _export(ckpt, tmp_path / "m.onnx", "--calibration", str(tmp_path / "calib")) == 3
    assert "no NIfTI files" in _one_line_error(capsys)
    assert not (tmp_path / "m.onnx").exists()


def test_parity_failure_lists_every_check_exits_7_and_leaves_nothing(slices, tmp_path, capsys, monkeypatch):
    ckpt = save_checkpoint(create_model("unet", features=TINY), tmp_path / "u.pth.tar", extra={"features": TINY})
    impossible = Tolerance(min_label_agreement=1.01, max_logit_error=-1.0, logit_atol=0.0)
    monkeypatch.setitem(export_spec.DEFAULT_TOLERANCES, "fp32", impossible)
    monkeypatch.setattr(onnx_export, "parity_sets", lambda calibration, *, hw, slices_per_volume: slices)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous model")  # an existing file must survive a failed export untouched
    assert _export(ckpt, out) == 7
    err = _one_line_error(capsys)
    assert "2 parity check(s) failed" in err and "label agreement" in err and "logit difference" in err
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "u.pth.tar"]


def test_without_torch_the_command_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert (
        _export(tmp_path / "x.pth.tar", tmp_path / "m.onnx") == 12
    )  # EXIT_DEPENDENCY: an environment fault, not a bug
    err = _one_line_error(capsys)
    assert 'pip install "limbseg-rt[export]"' in err


def test_negative_int8_float_levels_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(
            [
                "export",
                "--arch",
                "unet",
                "--checkpoint",
                str(tmp_path / "c.pth.tar"),
                "--out",
                str(tmp_path / "m.onnx"),
                "--precision",
                "int8",
                "--int8-float-levels",
                "-1",
            ]
        )
    assert exc.value.code == 2 and "must be 0 or more" in capsys.readouterr().err
