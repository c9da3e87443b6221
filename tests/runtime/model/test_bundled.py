"""Bundled model lookup against a temporary models folder."""

from __future__ import annotations

import pytest
from onnx_factory import make_tiny_model

from limbseg_rt.runtime.errors import ModelError
from limbseg_rt.runtime.model import bundled
from limbseg_rt.runtime.model.bundled import list_bundled, resolve_model


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundled")
    make_tiny_model(d / "unet-fp32.onnx")
    make_tiny_model(d / "unet-int8.onnx", precision="int8")
    make_tiny_model(d / "sc-unet-fp32.onnx", position=True)
    (d / "unet.md").write_text("# UNet model card\n")
    (d / "notes.onnx").write_bytes(b"ignored: not an {arch}-{precision} name")
    return d


def test_list_bundled_finds_only_well_named_files(models_dir):
    found = list_bundled(models_dir)
    assert [(m.arch, m.precision) for m in found] == [("unet", "fp32"), ("unet", "int8"), ("sc-unet", "fp32")]
    unet = found[0]
    assert unet.size_bytes == (models_dir / "unet-fp32.onnx").stat().st_size
    assert unet.card == models_dir / "unet.md" and found[2].card is None
    assert len(unet.sha256()) == 64 and unet.sha256() != found[1].sha256()


def test_auto_precision_follows_the_provider(models_dir):
    assert resolve_model("unet", provider="cpu", models_dir=models_dir).name == "unet-int8.onnx"
    assert resolve_model("UNet", provider="openvino", models_dir=models_dir).name == "unet-int8.onnx"
    assert resolve_model("unet", provider="cuda", models_dir=models_dir).name == "unet-fp32.onnx"
    assert resolve_model("unet", provider="tensorrt", models_dir=models_dir).name == "unet-fp32.onnx"
    # no int8 bundled for sc-unet: the CPU takes fp32
    assert resolve_model("sc_unet", provider="cpu", models_dir=models_dir).name == "sc-unet-fp32.onnx"
    assert resolve_model("unet", precision="fp32", provider="cpu", models_dir=models_dir).name == "unet-fp32.onnx"


def test_missing_bundles_list_what_is_bundled(models_dir):
    with pytest.raises(
        ModelError, match=r"no bundled attention-unet model .*bundled: unet \(fp32\), unet \(int8\), sc-unet \(fp32\)"
    ):
        resolve_model("attention-unet", provider="cpu", models_dir=models_dir)
    with pytest.raises(
        ModelError, match=r"no bundled sc-unet model in int8 .*; use --precision fp32 or give a .onnx file"
    ):
        resolve_model("sc-unet", precision="int8", provider="cpu", models_dir=models_dir)
    with pytest.raises(ModelError, match=r"no bundled attention-unet model .*; give a .onnx file instead"):
        resolve_model("attention-unet", precision="fp32", provider="cuda", models_dir=models_dir)
    with pytest.raises(ModelError, match=r"unknown model 'resnet'.*unet, attention-unet, sc-unet"):
        resolve_model("resnet", provider="cpu", models_dir=models_dir)
    with pytest.raises(ModelError, match="--provider tensorrt --precision fp16"):
        resolve_model("unet", precision="fp16", provider="tensorrt", models_dir=models_dir)


def test_paths_are_used_as_given_and_checked_against_their_metadata(models_dir, tmp_path):
    path = models_dir / "unet-int8.onnx"
    assert resolve_model(str(path), provider="cuda") == path
    assert resolve_model(str(path), precision="int8", provider="cpu") == path
    with pytest.raises(ModelError, match="unet-int8.onnx is a int8 model, but --precision fp32"):
        resolve_model(str(path), precision="fp32", provider="cpu")
    with pytest.raises(ModelError, match="model file not found"):
        resolve_model(str(tmp_path / "nope.onnx"), provider="cpu")


def test_default_models_dir_is_inside_the_runtime_package():
    assert bundled.MODELS_DIR.parts[-3:] == ("runtime", "data", "models") or bundled.MODELS_DIR.parts[-3:-1] == (
        "data",
        "models",
    )
    assert all(m.path.parent == bundled.MODELS_DIR for m in list_bundled())
