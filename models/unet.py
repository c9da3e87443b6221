"""The UNet of Henson et al. 2024 (authors' layout): 4 levels, DoubleConv blocks, 38 classes.

State-dict keys: ``downs.{i}.conv.*``, ``deepest_conv.conv.*``, ``ups.{2k}.*`` (ConvTranspose2d),
``ups.{2k+1}.conv.*`` (DoubleConv), ``final_conv.*``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from limbseg_rt.models.blocks import (
    DEFAULT_CLASSES,
    DEFAULT_FEATURES,
    DoubleConv,
    build_encoder,
    check_features,
    encode,
    match_size,
)


class UNet(nn.Module):
    """``forward(image)``: float32 ``[N, in_channels, H, W]`` -> logits float32 ``[N, classes, H, W]``.

    Any H, W >= 2**len(features); sides that are multiples of 2**len(features) (16 by default,
    e.g. the trained 272x240) need no resizing inside the network, other sizes are handled by
    bilinearly resizing each upsampled map to its skip connection.
    """

    def __init__(
        self,
        *,
        classes: int = DEFAULT_CLASSES,
        features: Sequence[int] = DEFAULT_FEATURES,
        in_channels: int = 1,
    ):
        super().__init__()
        feats = check_features(features, in_channels, classes)
        self.features, self.classes, self.in_channels = feats, int(classes), int(in_channels)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.downs, self.deepest_conv = build_encoder(feats, self.in_channels)
        self.ups = nn.ModuleList()
        for f in reversed(feats):
            self.ups.append(nn.ConvTranspose2d(f * 2, f, kernel_size=2, stride=2))
            self.ups.append(DoubleConv(f * 2, f))
        self.final_conv = nn.Conv2d(feats[0], self.classes, kernel_size=1)

    def decode(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, classes, H, W]`` (shared with SC-UNet)."""
        x, skips = encode(self.downs, self.deepest_conv, self.pool, image)
        for k, skip in enumerate(skips):
            up = match_size(self.ups[2 * k](x), skip)
            x = self.ups[2 * k + 1](torch.cat((skip, up), dim=1))
        return self.final_conv(x)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decode(image)
