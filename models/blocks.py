"""Building blocks shared by the three networks (Henson et al. 2024, authors' published layout).

State-dict key names follow the authors' checkpoints exactly, so their ``.pth.tar`` files load
unchanged: a ``DoubleConv`` keeps its layers in an ``nn.Sequential`` called ``conv``
(keys ``conv.0.weight``, ``conv.1.*`` (BatchNorm), ``conv.3.weight``, ``conv.4.*``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_FEATURES: tuple[int, ...] = (64, 128, 256, 512)
DEFAULT_CLASSES = 38


class DoubleConv(nn.Module):
    """(Conv3x3 stride 1 pad 1 without bias, BatchNorm2d, ReLU) x 2.

    ``[N, in_channels, H, W]`` float32 -> ``[N, out_channels, H, W]``; any H, W.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def match_size(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize ``x`` [N, C, h, w] to ``like``'s spatial size when they differ.

    Sizes differ only when an input side is not a multiple of 2**levels (max-pooling floors);
    for 272x240 inputs this is a no-op and adds nothing to the exported graph.
    """
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def check_features(features, in_channels: int, classes: int) -> tuple[int, ...]:
    """Validate constructor arguments; returns ``features`` as a tuple of ints."""
    feats = tuple(int(f) for f in features)
    if not feats or any(f < 1 for f in feats):
        raise ValueError(f"features must be a non-empty sequence of positive widths, got {features!r}")
    if int(in_channels) < 1 or int(classes) < 1:
        raise ValueError(f"in_channels and classes must be >= 1, got {in_channels}, {classes}")
    return feats


def build_encoder(features: tuple[int, ...], in_channels: int) -> tuple[nn.ModuleList, DoubleConv]:
    """The contracting path shared by every architecture: ``(downs, deepest_conv)``, one DoubleConv
    per level and the bottleneck DoubleConv(features[-1] -> 2 * features[-1]). The caller stores
    them as ``self.downs`` / ``self.deepest_conv`` so checkpoint keys keep the authors' names."""
    downs = nn.ModuleList()
    ch = int(in_channels)
    for f in features:
        downs.append(DoubleConv(ch, f))
        ch = f
    return downs, DoubleConv(features[-1], features[-1] * 2)


def encode(downs: nn.ModuleList, deepest: nn.Module, pool: nn.Module, x: torch.Tensor):
    """Run the contracting path: returns (bottleneck map, skips deepest-first)."""
    skips = []
    for down in downs:
        x = down(x)
        skips.append(x)
        x = pool(x)
    return deepest(x), skips[::-1]
