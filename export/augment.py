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

Acquisition-shift augmentation (``AppearanceSpec`` and ``AugmentSpec.zoom``, not in the paper): what
users' scans differ in, applied to the normalised ``[0, 1]`` slices after the geometric transform.
Each sample draws its own parameters, each kind of change with its own probability:

- resolution: shrink by ``f`` (uniform in ``resolution``) with an antialiasing filter, add Gaussian
  noise at the coarse grid (``noise_std`` uniform), resize back linearly: a coarser acquisition
  interpolated onto the grid, with the correlated noise such a scan has;
- contrast: gamma ``x ** g`` (``log g`` uniform in ``log gamma``), a window change
  ``(x - a) / (b - a)`` (``a`` in ``window_low``, ``b`` in ``window_high``: another intensity scale,
  or the percentile window of a scan that covers only the thigh or only the calf, which is how
  partial coverage reaches a 2D network), and a smooth multiplicative bias field
  ``exp(sum c_ij x^i y^j)``, ``i + j <= 2``, coefficients uniform in ``+-bias``;
- field of view (``AugmentSpec.zoom``): the anatomy scaled by ``z`` (``log z`` uniform), i.e. the same
  limb seen with a wider (``z < 1``) or narrower (``z > 1``) field of view on the same grid.

Results are clipped to ``[0, 1]``, as the runtime's normalisation clips.

``chosen`` (bool ``[N]``, optional, in ``augment_appearance`` and ``augment_batch``) limits the
acquisition-shift changes to some samples; the others keep the paper's augmentation only. The
trainer draws it with ``--shift-prob``, so a fine-tuning batch still holds un-shifted slices.
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
    zoom: tuple[float, float] = (1.0, 1.0)  # anatomy scale range (field of view), log-uniform

    def __post_init__(self) -> None:
        if not 0.0 < self.zoom[0] <= self.zoom[1]:
            raise ValueError("zoom must be a range 0 < low <= high")
        if self.crop_hw is not None and min(self.crop_hw) < 1:
            raise ValueError("crop sizes must be >= 1 pixel")
        if not (0.0 <= self.lr_flip_p <= 1.0 and 0.0 <= self.ap_flip_p <= 1.0):
            raise ValueError("flip probabilities must lie in [0, 1]")
        if self.max_rotation_deg < 0:
            raise ValueError("max_rotation_deg must be >= 0")


NO_AUGMENT = AugmentSpec(0.0, 0.0, 0.0, None)
SHIFT_ZOOM = (0.78, 1.25)  # a 280-560 mm field of view on a 448 mm trained one


@dataclass(frozen=True)
class AppearanceSpec:
    """Acquisition-shift changes of intensity and resolution (see the module docstring).

    Probabilities ``p_*`` per sample; ranges are ``(low, high)``. The defaults are what
    ``limbseg-rt train --shift-augment`` uses (the bundled demo models were not fine-tuned with it:
    checkpoints/README.md).
    """

    p_resolution: float = 0.3
    resolution: tuple[float, float] = (1.0, 2.5)
    noise_std: tuple[float, float] = (0.0, 0.04)
    p_gamma: float = 0.4
    gamma: tuple[float, float] = (0.5, 2.0)
    p_window: float = 0.4
    window_low: tuple[float, float] = (-0.05, 0.08)
    window_high: tuple[float, float] = (0.7, 1.3)
    p_bias: float = 0.3
    bias: float = 0.3

    def __post_init__(self) -> None:
        for name in ("p_resolution", "p_gamma", "p_window", "p_bias"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")
        if not (1.0 <= self.resolution[0] <= self.resolution[1] and 0.0 < self.gamma[0] <= self.gamma[1]):
            raise ValueError("resolution factors must be >= 1 and gamma > 0, as (low, high) ranges")
        if not self.window_low[1] < self.window_high[0]:
            raise ValueError("window_low must stay below window_high")


NO_APPEARANCE = AppearanceSpec(0.0, p_gamma=0.0, p_window=0.0, p_bias=0.0)


def _uniform(n: int, lo: float, hi: float, generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def augment_appearance(
    images: torch.Tensor,
    spec: AppearanceSpec = AppearanceSpec(),
    generator: torch.Generator | None = None,
    chosen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply ``spec`` to ``images`` float32 ``[N, C, H, W]`` in ``[0, 1]``; returns a new tensor of
    the same shape and dtype, in ``[0, 1]``. Labels are unaffected (no geometry changes here).
    ``chosen`` (bool ``[N]``): only those samples change; the others come back exactly as given."""
    if images.ndim != 4:
        raise ValueError(f"images [N, C, H, W] expected, got {tuple(images.shape)}")
    x = images.clone()
    n, _, h, w = x.shape
    draw = torch.rand(n, 4, generator=generator)
    if chosen is not None:
        chosen = torch.as_tensor(chosen, dtype=torch.bool)
        if chosen.shape != (n,):
            raise ValueError(f"chosen must be [n] = [{n}], got {tuple(chosen.shape)}")
        draw[~chosen] = 2.0  # above every probability: no change is drawn for these samples
    res = _uniform(n, *spec.resolution, generator)
    noise = _uniform(n, *spec.noise_std, generator)
    for i in torch.nonzero(draw[:, 0] < spec.p_resolution).flatten().tolist():
        lh, lw = max(1, round(h / float(res[i]))), max(1, round(w / float(res[i])))
        low = F.interpolate(x[i : i + 1], size=(lh, lw), mode="bilinear", antialias=True, align_corners=False)
        low = low + float(noise[i]) * torch.randn(low.shape, generator=generator)
        x[i : i + 1] = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    x = x.clamp(0.0, 1.0)
    g = torch.exp(_uniform(n, math.log(spec.gamma[0]), math.log(spec.gamma[1]), generator))
    g = torch.where(draw[:, 1] < spec.p_gamma, g, torch.ones(n))
    x = x.pow(g.view(n, 1, 1, 1))
    a = torch.where(draw[:, 2] < spec.p_window, _uniform(n, *spec.window_low, generator), torch.zeros(n))
    b = torch.where(draw[:, 2] < spec.p_window, _uniform(n, *spec.window_high, generator), torch.ones(n))
    x = (x - a.view(n, 1, 1, 1)) / (b - a).view(n, 1, 1, 1)
    coef = _uniform(n * 6, -spec.bias, spec.bias, generator).view(n, 6)
    coef = coef * (draw[:, 3] < spec.p_bias).to(coef.dtype)[:, None]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    basis = torch.stack([torch.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy])  # [6, H, W]
    field = torch.exp(torch.einsum("nk,khw->nhw", coef, basis))
    x = x * field[:, None]
    x = x.clamp(0.0, 1.0).to(images.dtype)
    if chosen is not None:
        # Skipped samples went through the identity maps above; return their input bit for bit.
        x[~chosen] = images[~chosen]
    return x


def random_affines(
    n: int,
    hw: tuple[int, int],
    spec: AugmentSpec,
    generator: torch.Generator | None = None,
    out_hw: tuple[int, int] | None = None,
    centres: torch.Tensor | None = None,
    chosen: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[n, 2, 3]`` float32 matrices for ``F.affine_grid`` (normalised coordinates, x = axis W).

    A rotation in pixel space becomes ``D_in^-1 R F D_out`` in normalised coordinates with
    ``D = diag(W/2, H/2)`` of the input / output grid; without that correction a non-square slice
    would be sheared. ``out_hw`` (a crop, at most ``hw``) adds a random translation that keeps the
    window inside the slice. ``centres`` (float ``[n, 2]``, input pixel ``(row, col)``; NaN rows keep
    the random translation) puts the window's centre on that pixel; the rotation then turns the
    window about it. ``chosen`` (bool ``[n]``): only those samples are zoomed (``spec.zoom``).
    """
    h, w = hw
    oh, ow = out_hw or hw
    u = torch.rand(n, 5, generator=generator)
    lz0, lz1 = math.log(spec.zoom[0]), math.log(spec.zoom[1])
    # Drawn only when zoom is on, so runs without it keep their random stream.
    inv_zoom = (
        torch.exp(-(lz0 + (lz1 - lz0) * torch.rand(n, generator=generator))) if lz1 > lz0 or lz0 else torch.ones(n)
    )
    if chosen is not None:
        chosen = torch.as_tensor(chosen, dtype=torch.bool)
        if chosen.shape != (n,):
            raise ValueError(f"chosen must be [n] = [{n}], got {tuple(chosen.shape)}")
        inv_zoom = torch.where(chosen, inv_zoom, torch.ones(n))
    angle = (u[:, 0] * 2.0 - 1.0) * math.radians(spec.max_rotation_deg)
    flip_w = torch.where(u[:, 2] < spec.ap_flip_p, -1.0, 1.0)  # mirrors axis W (anterior-posterior)
    flip_h = torch.where(u[:, 1] < spec.lr_flip_p, -1.0, 1.0)  # mirrors axis H (left-right)
    cos, sin = torch.cos(angle) * inv_zoom, torch.sin(angle) * inv_zoom
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
    chosen: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch. ``images`` float32 ``[N, C, H, W]``, ``labels`` int64 ``[N, H, W]``;
    returns new tensors of the same dtypes, shaped ``[N, C, h, w]`` / ``[N, h, w]`` with
    ``(h, w) = spec.crop_hw`` (clipped to the slice) or ``(H, W)``. ``generator`` makes it reproducible;
    ``centres`` and ``chosen`` (the samples that get ``spec.zoom``) see ``random_affines``."""
    if images.ndim != 4 or labels.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"images [N,C,H,W] and labels [N,H,W] expected, got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    n, _, h, w = images.shape
    oh, ow = (min(spec.crop_hw[0], h), min(spec.crop_hw[1], w)) if spec.crop_hw else (h, w)
    theta = random_affines(n, (h, w), spec, generator, (oh, ow), centres, chosen).to(images.dtype)
    grid = F.affine_grid(theta, [n, 1, oh, ow], align_corners=False)
    out_img = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lab = labels[:, None].to(images.dtype)  # class indices <= 255 are exact in float32
    out_lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out_img, out_lab[:, 0].round().to(labels.dtype)
