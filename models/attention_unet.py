"""The Attention UNet of Henson et al. 2024 (authors' layout).

Same encoder and bottleneck as the UNet. At each decoder level (width ``f``, deepest first) an
attention gate weighs the skip ``x`` (f channels, size S) with the deeper map ``g`` (2f channels,
size S/2): ``psi = sigmoid(BN(conv1x1(relu(W_g g + W_x x))))`` upsampled 2x by a transposed conv,
gated skip ``x * psi``; then ``g`` is upsampled by ConvTranspose2d(2f -> f), concatenated after the
gated skip and fused by a DoubleConv(2f -> f).

State-dict keys: ``downs.*``, ``deepest_conv.*``, ``att_block.{i}.W_g.{0,1}.*``,
``att_block.{i}.W_x.{0,1}.*``, ``att_block.{i}.psi.{0,1,3}.*`` (0 Conv1x1, 1 BN, 2 Sigmoid,
3 ConvTranspose2d), ``up_samples.{i}.*``, ``up_convs.{i}.conv.*``, ``final_conv.*``.
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


class AttentionGate(nn.Module):
    """``forward(g, x)``: g ``[N, 2f, h, w]``, x ``[N, f, H, W]`` (H ~ 2h) -> gated x ``[N, f, H, W]``."""

    def __init__(self, f: int):
        super().__init__()
        self.W_g = nn.Sequential(nn.Conv2d(2 * f, f, kernel_size=1, bias=True), nn.BatchNorm2d(f))
        self.W_x = nn.Sequential(nn.Conv2d(f, f, kernel_size=1, stride=2, bias=True), nn.BatchNorm2d(f))
        self.relu = nn.ReLU(inplace=True)
        self.psi = nn.Sequential(
            nn.Conv2d(f, 1, kernel_size=1, bias=True),
            nn.BatchNorm2d(1),
            nn.Sigmoid(),
            nn.ConvTranspose2d(1, 1, kernel_size=2, stride=2),
        )

    @torch.no_grad()
    def open_(self) -> None:
        """Make the gate pass its skip unchanged (``psi`` = 1 everywhere): its last layer, the transposed
        conv that upsamples ``psi``, gets weight 0 and bias 1. Gradients still reach that weight, so a
        gate opened this way learns from there."""
        up = self.psi[3]
        up.weight.zero_()
        up.bias.fill_(1.0)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        xs = self.W_x(x)  # stride 2: ceil(H/2) x ceil(W/2)
        gs = match_size(self.W_g(g), xs)  # g is floor(H/2): differs only for odd sides
        psi = match_size(self.psi(self.relu(gs + xs)), x)
        return x * psi


class AttentionUNet(nn.Module):
    """``forward(image)``: float32 ``[N, in_channels, H, W]`` -> logits ``[N, classes, H, W]``.

    Any H, W >= 2**len(features); non-multiples of 2**len(features) are handled bilinearly.
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
        rev = tuple(reversed(feats))
        self.att_block = nn.ModuleList(AttentionGate(f) for f in rev)
        self.up_samples = nn.ModuleList(nn.ConvTranspose2d(2 * f, f, kernel_size=2, stride=2) for f in rev)
        self.up_convs = nn.ModuleList(DoubleConv(2 * f, f) for f in rev)
        self.final_conv = nn.Conv2d(feats[0], self.classes, kernel_size=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        g, skips = encode(self.downs, self.deepest_conv, self.pool, image)
        for i, skip in enumerate(skips):
            gated = self.att_block[i](g, skip)
            up = match_size(self.up_samples[i](g), skip)
            g = self.up_convs[i](torch.cat((gated, up), dim=1))
        return self.final_conv(g)
