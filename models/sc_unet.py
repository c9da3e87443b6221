"""SC-UNet of Henson et al. 2024: the UNet whose logits are scaled per class by the slice position.

``spatiallinear`` = Linear(100 -> classes) maps the one-hot position (see runtime/model/position.py) to
one weight per class; logits ``[N, C, H, W]`` are multiplied by it broadcast over H, W.
State-dict keys: the UNet's plus ``spatiallinear.{weight,bias}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from limbseg_rt.models.blocks import DEFAULT_CLASSES, DEFAULT_FEATURES
from limbseg_rt.models.unet import UNet
from limbseg_rt.runtime.model.position import POSITION_BINS


def position_onehot_torch(position: torch.Tensor) -> torch.Tensor:
    """One-hot float32 ``[N, 100]`` from positions ``p`` float ``[N]``: runtime/model/position.py's rule.

    clamp to [0, 1], float32 ``p * 100``, truncate (Cast to int64 truncates toward zero, equal to
    floor here as values are >= 0), minus 1, -1 wraps to the last bin. Written with ops that export
    to plain ONNX (Clip, Mul, Cast, Sub, Less/Where, Equal against a constant range, Cast).
    """
    p = torch.clamp(position.to(torch.float32), 0.0, 1.0)
    idx = (p * float(POSITION_BINS)).to(torch.int64) - 1
    idx = torch.where(idx < 0, idx + POSITION_BINS, idx)
    bins = torch.arange(POSITION_BINS, dtype=torch.int64, device=position.device)
    return (idx.unsqueeze(1) == bins.unsqueeze(0)).to(torch.float32)


class SCUNet(UNet):
    """``forward(image, position)``: image float32 ``[N, in_channels, H, W]``, position float32 ``[N]``
    (fraction along the limb, proximal -> distal, see position.py) -> logits ``[N, classes, H, W]``.
    """

    def __init__(
        self,
        *,
        classes: int = DEFAULT_CLASSES,
        features: Sequence[int] = DEFAULT_FEATURES,
        in_channels: int = 1,
    ):
        super().__init__(classes=classes, features=features, in_channels=in_channels)
        self.spatiallinear = nn.Linear(POSITION_BINS, self.classes)

    def forward(self, image: torch.Tensor, position: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        weights = self.spatiallinear(position_onehot_torch(position))  # [N, classes]
        return self.decode(image) * weights[:, :, None, None]
