"""Model cards of the demo-model builder: what they say about files that are, or are not, bundled."""

from __future__ import annotations

from limbseg_rt.export.demo_models import model_card


def _evals(dsc: float, per_muscle: dict[str, float]) -> dict:
    mean = {"dsc": dsc, "rve_percent": 0.5, "abs_rve_percent": 8.0, "hd_mm": 30.0, "hd95_mm": 5.0}
    return {
        "seeds": {200: {**mean, "per_muscle_dsc": per_muscle}, 201: {**mean, "per_muscle_dsc": per_muscle}},
        "mean": mean,
    }


def _export(name: str, bundled: bool) -> dict:
    return {
        "file": name,
        "size_bytes": 7_900_000 if "fp32" in name else 2_200_000,
        "sha256": name[:2] * 32,
        "parity": {"passed": True},
        "bundled": bundled,
    }


def test_a_card_for_an_int8_only_bundle_marks_the_fp32_reference_as_not_bundled(tmp_path):
    ckpt = tmp_path / "sc-unet.pth.tar"
    ckpt.write_bytes(b"checkpoint bytes")
    exports = {"fp32": _export("sc-unet-fp32.onnx", False), "int8": _export("sc-unet-int8.onnx", True)}
    evals = {"fp32": _evals(0.905, {"ADB": 0.91, "FDL": 0.70}), "int8": _evals(0.903, {"ADB": 0.90, "FDL": 0.69})}
    shuffled = _evals(0.851, {"ADB": 0.85, "FDL": 0.6})
    card = model_card(
        "sc-unet", ckpt, exports, evals, shuffled, "`limbseg-rt train --seed 3`", export_options=" --bundle int8"
    )
    lines = card.splitlines()
    assert "| sc-unet-int8.onnx | 200, 201 | 0.903 |" in card
    assert "| sc-unet-fp32.onnx (not bundled) | 200, 201 | 0.905 |" in card
    fp32_line = next(line for line in lines if line.startswith("- `sc-unet-fp32.onnx`"))
    int8_line = next(line for line in lines if line.startswith("- `sc-unet-int8.onnx`"))
    assert "not bundled" in fp32_line and "not bundled" not in int8_line
    # The position check and the per-muscle list describe the file that ships.
    assert (
        "Position input check (sc-unet-int8.onnx): mean DSC with true positions 0.903, with shuffled positions 0.851"
        in card
    )
    assert "Per-muscle DSC (sc-unet-int8.onnx, mean over seeds):" in card and "FDL 0.69" in card
    assert "--archs sc-unet --bundle int8" in card


def test_a_card_for_a_full_bundle_lists_every_file_as_shipped(tmp_path):
    ckpt = tmp_path / "unet.pth.tar"
    ckpt.write_bytes(b"checkpoint bytes")
    exports = {"fp32": _export("unet-fp32.onnx", True), "int8": _export("unet-int8.onnx", True)}
    evals = {"fp32": _evals(0.9, {"ADB": 0.91}), "int8": _evals(0.899, {"ADB": 0.90})}
    card = model_card("unet", ckpt, exports, evals, None, "notes")
    assert "not bundled" not in card and "Position input check" not in card
    assert "| unet-fp32.onnx | 200, 201 | 0.900 |" in card and "Per-muscle DSC (unet-fp32.onnx" in card


def test_the_builder_exits_non_zero_when_an_architecture_ends_with_nothing_to_bundle(tmp_path, monkeypatch, capsys):
    import limbseg_rt.export.onnx_export as onnx_export
    from limbseg_rt.export.demo_models import main
    from limbseg_rt.runtime.errors import LimbsegError

    def failing_export(arch, ckpt, out, **kwargs):
        raise LimbsegError("1 parity check(s) failed: fp32: label agreement 0.99 < 0.9999")

    monkeypatch.setattr(onnx_export, "export_model", failing_export)
    (tmp_path / "unet.pth.tar").write_bytes(b"checkpoint bytes")
    code = main(
        [
            "--checkpoints",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--archs",
            "unet",
            "sc-unet",
            "--precisions",
            "fp32",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "unet fp32: export failed" in err and "skip sc-unet" in err
    assert "not bundled: unet, sc-unet" in err
    assert not list((tmp_path / "out").glob("*"))  # no card and no model file
