"""Architecture facts of the three networks: parameter counts, key layout, forward shapes."""

from __future__ import annotations

import pytest
import torch

from limbseg_rt.models import MODELS, AttentionUNet, SCUNet, UNet, create_model
from limbseg_rt.runtime.errors import ModelError
from limbseg_rt.runtime.model.metadata import ARCHITECTURES

TINY = (4, 8, 16, 32)


def _run(model, x):
    with torch.no_grad():
        if isinstance(model, SCUNet):
            return model(x, torch.linspace(0.0, 1.0, x.shape[0]))
        return model(x)


@pytest.mark.parametrize(
    "name, expected",
    [("unet", 31_038_886), ("attention-unet", 32_090_118), ("sc-unet", 31_042_724)],
)
def test_parameter_counts_match_the_paper_models(name, expected):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_registry_names_are_the_metadata_architectures():
    assert isinstance(MODELS, dict)
    assert tuple(MODELS) == ARCHITECTURES
    assert MODELS["unet"] is UNet and MODELS["attention-unet"] is AttentionUNet and MODELS["sc-unet"] is SCUNet


def test_unknown_architecture_is_a_model_error_listing_choices():
    with pytest.raises(ModelError, match="unet, attention-unet, sc-unet"):
        create_model("vnet")


def test_bad_widths_are_rejected():
    with pytest.raises(ValueError):
        create_model("unet", features=())
    with pytest.raises(ValueError):
        create_model("unet", features=(4, 0))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("hw", [(64, 48), (67, 45), (272, 240), (33, 17)])
def test_forward_shape_any_size(name, hw):
    torch.manual_seed(0)
    model = create_model(name, features=TINY).eval()
    x = torch.rand(2, 1, *hw)
    y = _run(model, x)
    assert y.shape == (2, 38, *hw)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_batch_items_are_independent_in_eval(name):
    torch.manual_seed(1)
    model = create_model(name, features=TINY, classes=5).eval()
    x = torch.rand(3, 1, 48, 32)
    full = _run(model, x)
    single = _run(model, x[1:2]) if not isinstance(model, SCUNet) else model(x[1:2], torch.tensor([0.5]))
    assert torch.allclose(full[1:2], single, atol=1e-5)


def test_classes_and_in_channels_are_honoured():
    model = create_model("attention-unet", features=(2, 4), classes=3, in_channels=2).eval()
    assert _run(model, torch.rand(1, 2, 20, 12)).shape == (1, 3, 20, 12)


def test_sc_unet_scales_logits_by_position_weights():
    torch.manual_seed(2)
    model = create_model("sc-unet", features=TINY).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        base = model.decode(x)
        w = torch.randn(38, 100)
        model.spatiallinear.weight.copy_(w)
        model.spatiallinear.bias.zero_()
        y = model(x, torch.tensor([0.5, 1.0]))
    # p = 0.5 -> bin 49, p = 1 -> bin 99 (runtime/model/position.py)
    assert torch.allclose(y[0], base[0] * w[:, 49, None, None], atol=1e-6)
    assert torch.allclose(y[1], base[1] * w[:, 99, None, None], atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(model(x, torch.tensor([0.2, 0.2])), model(x, torch.tensor([0.7, 0.7])))
