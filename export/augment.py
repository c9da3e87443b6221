"""The paper's augmentation on whole batches: random rotation and flips, labels kept aligned.

Henson et al. rotate by up to +-35 degrees, flip horizontally with probability 0.5 and vertically
with probability 0.1. In our slice layout (``[H, W] = [x, y]`` of a RAS+ volume, see
``runtime.preprocess``) the displayed image's horizontal direction is the patient's left-right axis,
which is array axis H; vertical is anterior-posterior, array axis W. So ``lr_flip_p`` mirrors axis H
(a left leg becomes a plausible right leg) and ``ap_flip_p`` mirrors axis W (rare, as in the paper).

One affine per sample (rotation about the slice centre in pixel units, then flips) drives
``affine_grid``; images are resampled bilinearly, labels nearest-neighbour, both with zero
(= background) padding, so a label always sits under the image pixel it was painted on.

Optional random crops (``crop_hw``, not in the paper) come out of the same resampling: the output
grid covers a window at a random place in the slice, or centred on a given pixel (``centres``; the
trainer uses it to put a muscle in the window, as nnU-Net oversamples foreground). The networks are
fully convolutional, so training on crops costs a fraction of the compute per sample while inference
still sees whole slices; use it when CPU time is the limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSpec:
    """Rotation range in degrees (uniform in ``[-max_rotation_deg, +max_rotation_deg]``) and the
    probabilities of the two flips."""

    max_rotation_deg: float = 35.0
    lr_flip_p: float = 0.5
    ap_flip_p: float = 0.1
    crop_hw: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.crop_hw is not None and min(self.crop_hw) < 1:
            raise ValueError("crop sizes must be >= 1 pixel")
        if not (0.0 <= self.lr_flip_p <= 1.0 and 0.0 <= self.ap_flip_p <= 1.0):
            raise ValueError("flip probabilities must lie in [0, 1]")
        if self.max_rotation_deg < 0:
            raise ValueError("max_rotation_deg must be >= 0")


NO_AUGMENT = AugmentSpec(0.0, 0.0, 0.0, None)


def random_affines(
    n: int, hw: tuple[int, int], spec: AugmentSpec, generator: torch.Generator | None = None,
    out_hw: tuple[int, int] | None = None,
    centres: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[n, 2, 3]`` float32 matrices for ``F.affine_grid`` (normalised coordinates, x = axis W).

    A rotation in pixel space becomes ``D_in^-1 R F D_out`` in normalised coordinates with
    ``D = diag(W/2, H/2)`` of the input / output grid; without that correction a non-square slice
    would be sheared. ``out_hw`` (a crop, at most ``hw``) adds a random translation that keeps the
    window inside the slice. ``centres`` (float ``[n, 2]``, input pixel ``(row, col)``; NaN rows keep
    the random translation) puts the window's centre on that pixel; the rotation then turns the
    window about it.
    """
    h, w = hw
    oh, ow = out_hw or hw
    u = torch.rand(n, 5, generator=generator)
    angle = (u[:, 0] * 2.0 - 1.0) * math.radians(spec.max_rotation_deg)
    flip_w = torch.where(u[:, 2] < spec.ap_flip_p, -1.0, 1.0)  # mirrors axis W (anterior-posterior)
    flip_h = torch.where(u[:, 1] < spec.lr_flip_p, -1.0, 1.0)  # mirrors axis H (left-right)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    # Columns are scaled by the flips (applied to output coordinates before the rotation).
    theta[:, 0, 0] = cos * flip_w * (ow / w)
    theta[:, 0, 1] = -sin * (oh / w) * flip_h
    theta[:, 1, 0] = sin * (ow / h) * flip_w
    theta[:, 1, 1] = cos * flip_h * (oh / h)
    theta[:, 0, 2] = (u[:, 3] * 2.0 - 1.0) * max(w - ow, 0) / w
    theta[:, 1, 2] = (u[:, 4] * 2.0 - 1.0) * max(h - oh, 0) / h
    if centres is not None:
        centres = torch.as_tensor(centres, dtype=theta.dtype)
        if centres.shape != (n, 2):
            raise ValueError(f"centres must be [n, 2] = [{n}, 2], got {tuple(centres.shape)}")
        given = ~torch.isnan(centres).any(dim=1)
        # Pixel centre (r, c) sits at normalised ((2c + 1) / W - 1, (2r + 1) / H - 1) (align_corners=False).
        theta[given, 0, 2] = (2.0 * centres[given, 1] + 1.0) / w - 1.0
        theta[given, 1, 2] = (2.0 * centres[given, 0] + 1.0) / h - 1.0
    return theta


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: AugmentSpec = AugmentSpec(),
    generator: torch.Generator | None = None,
    centres: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch. ``images`` float32 ``[N, C, H, W]``, ``labels`` int64 ``[N, H, W]``;
    returns new tensors of the same dtypes, shaped ``[N, C, h, w]`` / ``[N, h, w]`` with
    ``(h, w) = spec.crop_hw`` (clipped to the slice) or ``(H, W)``. ``generator`` makes it reproducible;
    ``centres`` see ``random_affines``."""
    if images.ndim != 4 or labels.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"images [N,C,H,W] and labels [N,H,W] expected, got {tuple(images.shape)} and {tuple(labels.shape)}")
    n, _, h, w = images.shape
    oh, ow = (min(spec.crop_hw[0], h), min(spec.crop_hw[1], w)) if spec.crop_hw else (h, w)
    theta = random_affines(n, (h, w), spec, generator, (oh, ow), centres).to(images.dtype)
    grid = F.affine_grid(theta, [n, 1, oh, ow], align_corners=False)
    out_img = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lab = labels[:, None].to(images.dtype)  # class indices <= 255 are exact in float32
    out_lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out_img, out_lab[:, 0].round().to(labels.dtype)
