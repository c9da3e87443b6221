"""Export specs: one frozen description per architecture of its ONNX graph and parity gates.

Graph contract (read back by the runtime through the metadata): input ``image`` float32
``[N, 1, H, W]``; SC-UNet adds ``position`` float32 ``[N]`` (fraction along the limb, see
runtime/model/position.py; the one-hot is computed inside the graph). Outputs ``logits`` float32
``[N, classes, H, W]`` and optionally ``labels`` uint8 ``[N, H, W]`` (ArgMax over classes inside the
graph). N, H and W are dynamic; H and W must be multiples of ``2 ** len(features)`` (16 for the
paper's 4 levels; the trained 272 x 240 is one) because max pooling floors odd sizes and the
exported graph keeps only the resize-free path.

Tolerances (see ``Tolerance``), justified:

- fp32: ONNX Runtime and PyTorch sum the same products in different orders (oneDNN vs MLAS
  kernels, im2col blocking). Each 3x3 convolution sums up to 9 x 2048 terms; float32 rounding then
  leaves relative errors of order 1e-6 per layer, ~1e-5 after the 23 layers. We allow 1e-4 of the
  logit scale (the largest |logit| of the reference batch) plus 1e-5 absolute: a 10x margin over
  what we measure (~1e-6 relative on the full-size UNet) while any wrong operator, wrong weight or
  wrong position bin moves logits by a sizeable fraction of their scale. Label agreement >= 99.99%
  (argmax may flip only where two logits tie within that error).
- fp16: 11-bit mantissa, so logits move by ~1e-3 of their scale; argmax flips only at near-ties:
  label agreement >= 99.5% (no logit gate; the agreement gate catches gross errors).
- int8: judged the way a user judges a segmentation: Dice of each muscle against the fp32 labels on
  held-out slices (not used for calibration) >= 0.97, for every muscle covering at least
  ``min_dice_pixels`` pixels in either labelling (smaller ones are reported, not gated: a handful of
  boundary pixels would dominate their Dice). Meaningful only for trained models: random weights
  have tiny logit margins, so any reduced precision flips many pixels (see docs/engines.md); tests use a
  briefly trained tiny model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from limbseg_rt.runtime.model.metadata import ARCHITECTURES, PRECISIONS

DEFAULT_OPSET = 18
LOGITS, LABELS, IMAGE, POSITION = "logits", "labels", "image", "position"


@dataclass(frozen=True)
class Tolerance:
    """Parity gates for one precision; ``None`` disables a gate (the value is still reported).

    ``min_label_agreement``: fraction of pixels whose argmax equals the PyTorch fp32 reference.
    ``max_logit_error``: allowed max |candidate - reference| as a fraction of the logit scale
    (max |reference logit| of the batch), plus ``logit_atol`` absolute.
    ``min_muscle_dice``: per-muscle Dice vs the reference labels, for muscles with at least
    ``min_dice_pixels`` pixels in the union of both labellings.
    """

    min_label_agreement: float | None = None
    max_logit_error: float | None = None
    logit_atol: float = 1e-5
    min_muscle_dice: float | None = None
    min_dice_pixels: int = 100

    def to_dict(self) -> dict:
        return {
            "min_label_agreement": self.min_label_agreement,
            "max_logit_error": self.max_logit_error,
            "logit_atol": self.logit_atol,
            "min_muscle_dice": self.min_muscle_dice,
            "min_dice_pixels": self.min_dice_pixels,
        }


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(min_label_agreement=0.9999, max_logit_error=1e-4),
    "fp16": Tolerance(min_label_agreement=0.995),
    "int8": Tolerance(min_muscle_dice=0.97),
}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input/output: name, element type, shape with symbolic dims as strings."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True)
class ExportSpec:
    """How one architecture is exported and checked."""

    architecture: str
    inputs: tuple[TensorSpec, ...]
    opset: int = DEFAULT_OPSET
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def needs_position(self) -> bool:
        return POSITION in self.input_names

    def outputs(self, *, classes: int, with_labels: bool) -> tuple[TensorSpec, ...]:
        logits = TensorSpec(LOGITS, "float32", ("N", classes, "H", "W"))
        return (logits, TensorSpec(LABELS, "uint8", ("N", "H", "W"))) if with_labels else (logits,)

    def tolerance(self, precision: str) -> Tolerance:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        return self.tolerances[precision]

    def with_tolerance(self, precision: str, tolerance: Tolerance) -> ExportSpec:
        return replace(self, tolerances={**self.tolerances, precision: tolerance})


_POSITION = TensorSpec(POSITION, "float32", ("N",))


def export_spec(architecture: str, *, in_channels: int = 1, opset: int = DEFAULT_OPSET) -> ExportSpec:
    """The spec of ``architecture`` (one of runtime.metadata.ARCHITECTURES)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    image = TensorSpec(IMAGE, "float32", ("N", int(in_channels), "H", "W"))
    inputs = (image, _POSITION) if architecture == "sc-unet" else (image,)
    return ExportSpec(architecture, inputs, opset=int(opset))
