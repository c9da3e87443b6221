"""Name -> model factory. A plain dict built from the architecture modules; nothing is constructed
until ``create_model`` is called. Names match ``runtime.metadata.ARCHITECTURES``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from limbseg_rt.models.attention_unet import AttentionUNet
from limbseg_rt.models.blocks import DEFAULT_CLASSES, DEFAULT_FEATURES
from limbseg_rt.models.sc_unet import SCUNet
from limbseg_rt.models.unet import UNet
from limbseg_rt.runtime.errors import ModelError

MODELS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "attention-unet": AttentionUNet,
    "sc-unet": SCUNet,
}


def create_model(
    name: str,
    *,
    classes: int = DEFAULT_CLASSES,
    features: Sequence[int] = DEFAULT_FEATURES,
    in_channels: int = 1,
) -> nn.Module:
    """A freshly initialised network (train mode) called ``name`` (one of ``MODELS``).

    ``features``: encoder widths, shallow to deep (the paper: 64, 128, 256, 512; the bottleneck
    has twice the last). Raises ``ModelError`` for an unknown name.
    """
    try:
        cls = MODELS[name]
    except (KeyError, TypeError):
        raise ModelError(f"unknown architecture {name!r}; choose one of: {', '.join(MODELS)}") from None
    return cls(classes=classes, features=features, in_channels=in_channels)
